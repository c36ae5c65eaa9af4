"""``build_engine``: vocoder source -> engine directory, reused when nothing changed.

Steps (each logged as ``[i/5] ...`` with the elapsed time, and passed to ``progress``):

1. load the vocoder (its weight digest is part of the build key);
2. export the fp32 ONNX graph;
3. plan FP16 precision on speech mels (skipped for fp32 engines);
4. build the engine: a strongly typed TensorRT plan, or an ONNX Runtime session description;
5. write ``manifest.json`` — the commit point: a directory without it is not an engine.

Cache: the build key hashes every input (source digest, precision, backend, profiles, options,
hifitrt version, TensorRT version and GPU for TensorRT, providers for ONNX Runtime). When the
existing manifest has the same key and :func:`verify_engine_dir` passes (every artifact's
sha256, the machine), the directory is reused in seconds. A changed input, a damaged or missing
file, or another GPU triggers a rebuild, with the reason logged, so nothing damaged ever
reaches TensorRT or ONNX Runtime. ``FileLock(DIR/.build.lock)`` serialises concurrent builds of
one directory: the second waits, then reuses the first one's result.

Atomicity: the old manifest is removed first, artifacts are produced in ``DIR/.staging-*`` and
renamed into place, and the manifest is written last (atomically).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__ as HIFITRT_VERSION
from ..errors import EngineError
from .machine import Machine, current_device, current_machine
from .manifest import (
    MANIFEST_NAME,
    Manifest,
    artifact_digests,
    manifest_path,
    read_manifest,
    verify_engine_dir,
    write_manifest,
)
from .profiles import ShapeProfile, default_profiles, parse_profile, validate_profiles

_LOG = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime")
PRECISION_CHOICES = ("fp16", "fp32")
TOTAL_STEPS = 5
LOCK_NAME = ".build.lock"
LOCK_TIMEOUT_S = 4 * 3600.0
FP32_ONNX = "model.onnx"
FP16_ONNX = "model.fp16.onnx"
PLAN_JSON = "precision_plan.json"
TRT_PLAN = "tensorrt/engine.plan"
TRT_TIMING_CACHE = "tensorrt/timing.cache"
DEFAULT_OPSET = 17

Progress = Callable[[str], None]


@dataclass
class BuildResult:
    """What :func:`build_engine` did: ``reused`` (no rebuild), the manifest, seconds per step."""

    engine_dir: Path
    manifest: Manifest
    reused: bool
    seconds: float
    steps: dict[str, float] = field(default_factory=dict)
    backend_reason: str = ""
    rebuild_reason: str = ""


# ------------------------------------------------------------------------------------ backend
def resolve_backend(requested: str, trt_module: Any = None) -> tuple[str, str]:
    """("tensorrt" | "onnxruntime", why) for the requested backend on this machine.

    ``auto`` picks TensorRT only with a CUDA GPU *and* an importable TensorRT, else ONNX
    Runtime (CUDA provider on a GPU, CPU otherwise). An explicit ``tensorrt`` without them is
    an error saying what is missing (``trt_module``, the test double, stands in for both).
    """
    if requested not in BACKEND_CHOICES:
        raise EngineError(f"unknown backend {requested!r}: use one of {', '.join(BACKEND_CHOICES)}")
    device = current_device()
    if requested == "onnxruntime":
        where = f"CUDA provider on {device.describe()}" if device else "CPU provider (no CUDA GPU)"
        return "onnxruntime", f"ONNX Runtime as requested ({where})"
    if requested == "tensorrt":
        from .tensorrt_common import import_tensorrt, tensorrt_version

        if trt_module is None and device is None:
            raise EngineError(
                "the TensorRT backend needs an NVIDIA GPU and this machine has none (torch sees no CUDA device): "
                "use --backend onnxruntime or auto"
            )
        trt = import_tensorrt(trt_module)  # clear EngineError when not installed or too old
        on = device.describe() if device else "the TensorRT test double"
        return "tensorrt", f"TensorRT {tensorrt_version(trt)} as requested on {on}"
    from .machine import tensorrt_version as installed_trt

    version = installed_trt(trt_module)
    if device is not None and version is not None:
        return "tensorrt", f"auto: CUDA GPU {device.describe()} and TensorRT {version} found"
    if device is None:
        return "onnxruntime", "auto: no CUDA GPU, so ONNX Runtime on the CPU provider"
    return "onnxruntime", (
        f"auto: CUDA GPU {device.describe()} but TensorRT is not importable, so ONNX Runtime with the CUDA "
        "provider (pip install 'hifitrt[gpu]' for TensorRT)"
    )


def _parse_profiles(profiles: Sequence[ShapeProfile | str] | None, min_frames: int,
                    cpu: bool = False) -> tuple[ShapeProfile, ...]:
    if not profiles:
        return default_profiles(min_frames, cpu=cpu)
    return tuple(p if isinstance(p, ShapeProfile) else parse_profile(str(p)) for p in profiles)


def _normalise_hardware_compatibility(value: str | None) -> str | None:
    if value is None or str(value).lower() in ("", "none"):
        return None
    return str(value).lower()


# ------------------------------------------------------------------------------------ key
def build_key(inputs: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of every build input."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _key_inputs(
    spec: Any, precision: str, backend: str, profiles: Sequence[ShapeProfile], options: dict[str, Any],
    machine: Machine, providers: Sequence[str],
) -> dict[str, Any]:
    return {
        "source_digest": spec.digest,
        "precision": precision,
        "backend": backend,
        "profiles": [p.to_dict() for p in profiles],
        "options": options,
        "hifitrt_version": HIFITRT_VERSION,
        "tensorrt_version": machine.tensorrt_version if backend == "tensorrt" else None,
        "gpu": machine.device.to_dict() if backend == "tensorrt" and machine.device else None,
        "providers": list(providers) if backend == "onnxruntime" else None,
    }


def _why_different(old: Manifest, inputs: dict[str, Any]) -> str:
    """Words for the first build input that changed since the existing manifest."""
    old_inputs = old.build_inputs
    if not isinstance(old_inputs, dict):
        return "the existing engine was built with other inputs"
    changed = [k for k in sorted(inputs) if old_inputs.get(k) != inputs[k]]
    if not changed:
        return "the existing engine's build key differs"
    names = {"source_digest": "the vocoder weights", "tensorrt_version": "the TensorRT version", "gpu": "the GPU"}
    return "changed since the last build: " + ", ".join(names.get(k, k) for k in changed)


# ------------------------------------------------------------------------------------ progress
class _Steps:
    """Emits ``[i/5] message (t s)`` lines to logging and the ``progress`` callback."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.started = time.perf_counter()
        self.times: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, line: str) -> None:
        _LOG.info("%s", line)
        if self.progress is not None:
            self.progress(line)

    def start(self, index: int, name: str, message: str) -> None:
        self.finish()
        self._current = (name, time.perf_counter())
        self.say(f"[{index}/{TOTAL_STEPS}] {message} ({self.elapsed():.1f} s)")

    def finish(self) -> None:
        if self._current is not None:
            name, t0 = self._current
            self.times[name] = round(time.perf_counter() - t0, 3)
            self._current = None


# ------------------------------------------------------------------------------------ build
def build_engine(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    voice: str | None = None,
    backend: str = "auto",
    precision: str = "fp16",
    profiles: Sequence[ShapeProfile | str] | None = None,
    workspace_bytes: int = 2 << 30,
    hardware_compatibility: str | None = None,
    version_compatible: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    trt_module: Any = None,
    use_tensorrt_ep: bool = False,
    opset: int = DEFAULT_OPSET,
    verify_export: bool = True,
    machine: Machine | None = None,
) -> BuildResult:
    """Build (or reuse) the engine for ``source`` in ``out_dir``; see the module docstring.

    ``profiles`` are ShapeProfile objects or ``--profile`` strings (default: the three default
    profiles raised to the vocoder's ``min_frames``). ``progress`` receives each ``[i/5]``
    line. ``trt_module`` replaces ``import tensorrt`` (tests pass the CPU double).
    ``use_tensorrt_ep`` asks ONNX Runtime engines for its TensorRT execution provider.
    ``verify_export=False`` skips the fp32 ONNX-vs-PyTorch check of the export step (it does
    not change any artifact, so it is not part of the build key; tests use it for speed).
    ``machine`` is the GPU + TensorRT a TensorRT engine is recorded for and reuse is checked
    against (default :func:`current_machine`; tests pass the double's modelled GPU).
    """
    if precision not in PRECISION_CHOICES:
        raise EngineError(f"unknown precision {precision!r}: use fp16 or fp32")
    steps = _Steps(progress)
    backend_name, reason = resolve_backend(backend, trt_module)
    steps.say(f"backend: {backend_name} ({reason})")
    hardware_compatibility = _normalise_hardware_compatibility(hardware_compatibility)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    from filelock import FileLock, Timeout

    lock = FileLock(str(out / LOCK_NAME))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            steps.say(f"waiting for another build of {out} to finish")
            lock.acquire(timeout=LOCK_TIMEOUT_S)
    except Timeout as exc:
        raise EngineError(f"another build has held {out / LOCK_NAME} for hours; stop it or remove the lock") from exc
    try:
        return _build_locked(
            source, out, steps, voice=voice, backend_name=backend_name, backend_reason=reason,
            precision=precision, profiles=profiles, workspace_bytes=workspace_bytes,
            hardware_compatibility=hardware_compatibility, version_compatible=version_compatible,
            force=force, trt_module=trt_module, use_tensorrt_ep=use_tensorrt_ep, opset=opset,
            verify_export=verify_export, machine=machine,
        )
    finally:
        lock.release()


def _build_locked(
    source: str | os.PathLike[str], out: Path, steps: _Steps, *, voice: str | None, backend_name: str,
    backend_reason: str, precision: str, profiles: Sequence[ShapeProfile | str] | None, workspace_bytes: int,
    hardware_compatibility: str | None, version_compatible: bool, force: bool, trt_module: Any,
    use_tensorrt_ep: bool, opset: int, verify_export: bool, machine: Machine | None,
) -> BuildResult:
    from ..export.load import load_vocoder

    steps.start(1, "load", f"loading vocoder {os.fspath(source)}" + (f" voice {voice}" if voice else ""))
    vocoder = load_vocoder(source, voice=voice)
    spec = vocoder.spec
    on_cpu = backend_name == "onnxruntime" and current_device() is None
    chosen = _parse_profiles(profiles, spec.min_frames, cpu=on_cpu)
    validate_profiles(chosen, min_frames=spec.min_frames)

    if backend_name == "tensorrt":
        machine = machine if machine is not None else current_machine(trt_module)
        providers: list[str] = []
        options: dict[str, Any] = {
            "opset": opset, "workspace_bytes": int(workspace_bytes),
            "hardware_compatibility": hardware_compatibility, "version_compatible": bool(version_compatible),
        }
    else:
        from .onnxruntime_engine import choose_providers

        machine = Machine(current_device(), None)
        providers, _ = choose_providers(use_tensorrt_ep)
        options = {"opset": opset, "use_tensorrt_ep": bool(use_tensorrt_ep)}
    inputs = _key_inputs(spec, precision, backend_name, chosen, options, machine, providers)
    key = build_key(inputs)

    rebuild_reason = "--force" if force else ""
    if not force:
        reused, rebuild_reason = _try_reuse(out, key, inputs, machine, trt_module)
        if reused is not None:
            steps.finish()
            steps.say(f"reusing engine in {out}: same build key and all {len(reused.artifacts)} artifacts "
                      f"verified ({steps.elapsed():.1f} s)")
            return BuildResult(out, reused, True, round(steps.elapsed(), 3), steps.times, backend_reason, "")
    steps.say(f"building {out}: {rebuild_reason}")

    # De-commit the old engine first: during the rebuild the directory has no manifest, so no
    # reader can pair an old manifest with half-replaced files.
    manifest_path(out).unlink(missing_ok=True)
    _remove_other_backend(out, backend_name)
    for leftover in out.glob(".staging-*"):  # from a build that was killed; we hold the lock
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=str(out)))
    try:
        artifacts, calibration = _export_and_plan(vocoder, out, staging, steps, precision, opset, verify_export)
        engine_onnx = FP16_ONNX if precision == "fp16" else FP32_ONNX
        steps.start(4, "engine", f"building {backend_name} engine from {engine_onnx}")
        if backend_name == "tensorrt":
            engine_file, backend_info, extra = _build_tensorrt(
                out, engine_onnx, chosen, spec, workspace_bytes, hardware_compatibility, version_compatible,
                trt_module,
            )
        else:
            engine_file, backend_info, extra = _build_onnxruntime(out, engine_onnx, precision, use_tensorrt_ep)
        artifacts += extra
        steps.start(5, "manifest", "hashing artifacts and writing manifest.json")
        digests = artifact_digests(out, artifacts)
        manifest = Manifest(
            source={"location": _location(source), "voice": voice, "spec": spec.to_dict()},
            backend=backend_info,
            device=machine.device.to_dict() if backend_name == "tensorrt" and machine.device else None,
            precision=precision,
            profiles=[p.to_dict() for p in chosen],
            onnx_digest=digests[FP32_ONNX]["sha256"],
            precision_plan_digest=digests[PLAN_JSON]["sha256"] if PLAN_JSON in digests else None,
            engine_file=engine_file,
            options={**options, "calibration": calibration},
            artifacts=digests,
            quick_parity=None,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            build_key=key,
            build_inputs=inputs,
        )
        steps.finish()
        manifest.build_seconds = round(steps.elapsed(), 3)
        _make_readable(out, list(digests))
        write_manifest(out, manifest)
        _make_readable(out, [MANIFEST_NAME])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    steps.say(f"engine ready in {out} ({manifest.build_seconds:.1f} s)")
    return BuildResult(out, manifest, False, manifest.build_seconds, steps.times, backend_reason, rebuild_reason)


def _make_readable(out: Path, relpaths: Sequence[str]) -> None:
    """Atomic writes create 0600 temp files; an engine directory is shared with the service
    that loads it (often another user), so artifacts get the usual 0644."""
    for rel in relpaths:
        try:
            os.chmod(out / rel, 0o644)
        except OSError as exc:  # e.g. a file system without modes: not worth failing a build
            _LOG.debug("cannot chmod %s: %s", out / rel, exc)


def _location(source: str | os.PathLike[str]) -> str:
    text = os.fspath(source)
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def _try_reuse(
    out: Path, key: str, inputs: dict[str, Any], machine: Machine, trt_module: Any
) -> tuple[Manifest | None, str]:
    """(manifest, "") when ``out`` holds a verified engine with this key, else (None, why not)."""
    if not (out / MANIFEST_NAME).is_file():
        return None, "no finished engine there yet"
    try:
        old = read_manifest(out)
    except EngineError as exc:
        _LOG.warning("rebuilding: %s", exc)
        return None, f"the existing manifest is unusable ({exc})"
    if old.build_key != key:
        why = _why_different(old, inputs)
        _LOG.info("rebuilding %s: %s", out, why)
        return None, why
    try:
        manifest = verify_engine_dir(out, machine=machine, trt_module=trt_module)
    except EngineError as exc:
        _LOG.warning("rebuilding: %s", exc)
        return None, f"the existing engine failed verification ({exc})"
    return manifest, ""


def _remove_other_backend(out: Path, backend_name: str) -> None:
    """Drop the other backend's engine file so a directory never holds two engines, and the
    parity report of the engine being replaced (it would describe an engine that is gone)."""
    stale = out / ("onnxruntime/session.json" if backend_name == "tensorrt" else TRT_PLAN)
    stale.unlink(missing_ok=True)
    if (out / "report").is_dir():
        _LOG.info("removing the previous engine's report in %s", out / "report")
        shutil.rmtree(out / "report", ignore_errors=True)


def _export_and_plan(
    vocoder: Any, out: Path, staging: Path, steps: _Steps, precision: str, opset: int, verify: bool
) -> tuple[list[str], str | None]:
    """Steps 2-3 into ``staging``, then rename every produced file into ``out``."""
    from ..export.onnx_export import export_onnx
    from ..export.speech_inputs import TorchReference

    reference = TorchReference(vocoder.module)  # PyTorch outputs shared by export and planning
    steps.start(2, "export", f"exporting fp32 ONNX (opset {opset})")
    export_onnx(vocoder, staging / FP32_ONNX, opset=opset, verify=verify, reference=reference)
    calibration = None
    if precision == "fp16":
        from ..export.precision import plan_fp16
        from .calibration import calibration_mels

        mels, calibration = calibration_mels(vocoder.spec)
        steps.start(3, "precision", f"planning FP16 precision on {calibration}")
        plan_fp16(staging / FP32_ONNX, staging / FP16_ONNX, staging / PLAN_JSON, vocoder, mels, reference=reference)
    else:
        steps.start(3, "precision", "fp32 engine: no precision plan")
        for stale in (FP16_ONNX, PLAN_JSON):
            (out / stale).unlink(missing_ok=True)
    produced = []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = path.relative_to(staging).as_posix()
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        produced.append(rel)
    return produced, calibration


def _build_tensorrt(
    out: Path, engine_onnx: str, profiles: Sequence[ShapeProfile], spec: Any, workspace_bytes: int,
    hardware_compatibility: str | None, version_compatible: bool, trt_module: Any,
) -> tuple[str, dict[str, Any], list[str]]:
    from .tensorrt_builder import build_tensorrt_engine

    (out / "tensorrt").mkdir(exist_ok=True)
    result = build_tensorrt_engine(
        out / engine_onnx, out / TRT_PLAN, profiles,
        workspace_bytes=workspace_bytes, timing_cache_path=out / TRT_TIMING_CACHE,
        hardware_compatibility=hardware_compatibility, version_compatible=version_compatible,
        min_frames=spec.min_frames, trt_module=trt_module,
    )
    details = result.to_dict()
    for key in ("plan_path", "timing_cache_path", "profiles", "plan_sha256", "plan_bytes"):
        details.pop(key, None)
    backend = {"name": "tensorrt", "version": result.tensorrt_version, "providers": [], "build": details}
    return TRT_PLAN, backend, [TRT_PLAN]


def _build_onnxruntime(
    out: Path, engine_onnx: str, precision: str, use_tensorrt_ep: bool
) -> tuple[str, dict[str, Any], list[str]]:
    from .onnxruntime_engine import build_onnxruntime_engine

    result = build_onnxruntime_engine(out, engine_onnx, precision=precision, use_tensorrt_ep=use_tensorrt_ep)
    backend = {
        "name": "onnxruntime", "version": result.config.onnxruntime_version,
        "providers": list(result.config.providers), "reason": result.reason,
    }
    return engine_onnx, backend, [result.session_file]
