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

import contextlib
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
from typing import Any, Callable, Iterator, Sequence

from filelock import FileLock, Timeout

from .. import __version__ as HIFITRT_VERSION
from ..errors import EngineError
from ..export.load import Vocoder, load_vocoder
from ..export.onnx_export import export_onnx
from ..export.precision import plan_fp16
from ..export.reference import TorchRunner
from ..export.speech_inputs import calibration_mels
from ..export.spec import VocoderSpec
from . import layout
from .backends import Backend, BuildOptions, BuildRequest, backend_for, backend_names, resolve_backend
from .machine import Machine
from .manifest import Manifest, artifact_digests, manifest_path, read_manifest, verify_engine_dir, write_manifest
from .profiles import ShapeProfile, check_context, default_profiles, parse_profile, validate_profiles

_LOG = logging.getLogger(__name__)

TOTAL_STEPS = 5
LOCK_TIMEOUT_S = 4 * 3600.0

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


def _parse_profiles(profiles: Sequence[ShapeProfile | str], min_frames: int, cpu: bool) -> tuple[ShapeProfile, ...]:
    if not profiles:
        return default_profiles(min_frames, cpu=cpu)
    return tuple(p if isinstance(p, ShapeProfile) else parse_profile(str(p)) for p in profiles)


# ------------------------------------------------------------------------------------ key
def build_key(inputs: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of every build input."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _key_inputs(spec: VocoderSpec, options: BuildOptions, backend: Backend, profiles: Sequence[ShapeProfile],
                machine: Machine) -> dict[str, Any]:
    return {
        "source_digest": spec.digest,
        "precision": options.precision,
        "backend": backend.name,
        "profiles": [p.to_dict() for p in profiles],
        "hifitrt_version": HIFITRT_VERSION,
        **backend.key_inputs(options, machine),
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
    options: BuildOptions | None = None,
    *,
    progress: Progress | None = None,
    trt_module: Any = None,
    machine: Machine | None = None,
    **option_overrides: Any,
) -> BuildResult:
    """Build (or reuse) the engine for ``source`` in ``out_dir``; see the module docstring.

    ``options`` is a :class:`~hifitrt.engines.backends.BuildOptions`; keyword arguments named
    like its fields (``backend="onnxruntime"``, ``precision="fp32"``, ...) override it.
    ``progress`` receives each ``[i/5]`` line. ``trt_module`` replaces ``import tensorrt``
    (tests pass the CPU double). ``machine`` is the GPU + TensorRT a machine-bound (TensorRT)
    engine is recorded for and reuse is checked against (default: this machine; tests pass the
    double's modelled GPU).
    """
    opts = (options or BuildOptions()).replace(**option_overrides) if option_overrides else (options or BuildOptions())
    steps = _Steps(progress)
    backend, reason = resolve_backend(opts.backend, trt_module, options=opts)
    if opts.precision not in backend.precisions:
        raise EngineError(f"{backend.label} engines are {' or '.join(backend.precisions)}, not {opts.precision}: "
                          "use --precision " + backend.precisions[0])
    steps.say(f"backend: {backend.name} ({reason})")
    with build_lock(out_dir, steps.say) as out:
        if backend.machine_bound:
            here = machine if machine is not None else backend.machine(trt_module, opts.device)
        else:
            here = backend.machine(trt_module)
        return _build_locked(source, out, steps, opts, backend, reason, here, trt_module)


def claim_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    """The engine directory, created if new; refuses a directory that holds anything else.

    A build writes and deletes fixed names (model.onnx, tensorrt/, report/, ...); in a folder
    of the user's own files that would destroy them. So only a new or empty directory, or one
    already marked as a hifitrt engine directory (:data:`layout.OWNER_MARK`, or a hifitrt
    manifest from before the mark existed), is written. A read-only one is one clear line.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise EngineError(f"--out {out} is a file, not a directory: name a new or engine directory")
    if out.is_dir() and not _is_engine_dir(out):
        # The mark and lock of a concurrent build of this same directory may appear between
        # the check above and this listing: they are ours, not the user's files.
        ours = {layout.OWNER_MARK, layout.BUILD_LOCK}
        entries = sorted(entry.name for entry in out.iterdir() if entry.name not in ours)
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise EngineError(
                f"--out {out} already holds files that are not a hifitrt engine ({shown}): build into a new or "
                "empty directory (hifitrt never overwrites a folder it did not create)"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / layout.OWNER_MARK).touch(exist_ok=True)
    except OSError as exc:
        hint = "; an engine there can still be loaded (vocode --engine, serve)" if _is_engine_dir(out) else ""
        raise EngineError(f"cannot write the engine directory {out}: {exc.strerror or exc}{hint}") from None
    return out


def _is_engine_dir(out: Path) -> bool:
    if (out / layout.OWNER_MARK).is_file():
        return True
    try:
        data = json.loads((out / layout.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("schema") == "hifitrt.engine-manifest"


@contextlib.contextmanager
def build_lock(out_dir: str | os.PathLike[str], progress: Progress | None = None) -> Iterator[Path]:
    """Claim ``out_dir`` (:func:`claim_out_dir`) and hold its build lock; yields the directory.

    Re-entrant within one thread (one lock object per path), so ``build_and_verify`` holds it
    across build, quick parity and report while :func:`build_engine` takes it again inside: a
    second build of the same directory waits for the whole chain, not just the engine step.
    """
    out = claim_out_dir(out_dir)
    lock = FileLock(str(out / layout.BUILD_LOCK), is_singleton=True)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if progress is not None:
                progress(f"waiting for another build of {out} to finish")
            lock.acquire(timeout=LOCK_TIMEOUT_S)
    except Timeout as exc:
        raise EngineError(f"another build has held {out / layout.BUILD_LOCK} for hours; stop it or remove the lock") from exc
    except OSError as exc:
        raise EngineError(f"cannot lock {out / layout.BUILD_LOCK}: {exc.strerror or exc}") from None
    try:
        yield out
    finally:
        lock.release()


def _build_locked(source: str | os.PathLike[str], out: Path, steps: _Steps, opts: BuildOptions, backend: Backend,
                  backend_reason: str, machine: Machine, trt_module: Any) -> BuildResult:
    steps.start(1, "load", f"loading vocoder {os.fspath(source)}" + (f" voice {opts.voice}" if opts.voice else ""))
    vocoder = load_vocoder(source, voice=opts.voice)
    spec = vocoder.spec
    chosen = _parse_profiles(opts.profiles, spec.min_frames, cpu=backend.runs_on_cpu())
    validate_profiles(chosen, min_frames=spec.min_frames)
    if backend.name == "tensorrt":  # its profiles are hard limits: windows cannot exceed them
        context = spec.left_context_frames + (0 if spec.causal else spec.right_context_frames) + int(spec.nsf)
        check_context(chosen, context, allow_short=bool(getattr(opts, "allow_short_profiles", False)))
    inputs = _key_inputs(spec, opts, backend, chosen, machine)
    key = build_key(inputs)

    rebuild_reason = "--force" if opts.force else ""
    if not opts.force:
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
    _remove_stale(out, backend)
    for leftover in out.glob(layout.STAGING_PREFIX + "*"):  # from a build that was killed; we hold the lock
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=layout.STAGING_PREFIX, dir=str(out)))
    try:
        reference = TorchRunner(vocoder.module, cache=True)  # PyTorch outputs shared by every step
        artifacts, calibration = _export_and_plan(vocoder, reference, out, staging, steps, opts)
        engine_onnx = layout.onnx_for(opts.precision)
        steps.start(4, "engine", f"building {backend.name} engine from {engine_onnx}")
        built = backend.build(BuildRequest(out, engine_onnx, chosen, spec.min_frames, opts, trt_module,
                                           vocoder=vocoder, reference=reference))
        artifacts += list(built.artifacts)
        steps.start(5, "manifest", "hashing artifacts and writing manifest.json")
        digests = artifact_digests(out, artifacts)
        manifest = Manifest(
            source={"location": _location(source), "voice": opts.voice, "spec": spec.to_dict()},
            backend=built.info,
            device=backend.recorded_device(machine),
            precision=built.precision or opts.precision,
            profiles=tuple(chosen),
            onnx_digest=digests[layout.FP32_ONNX]["sha256"],
            precision_plan_digest=digests[layout.PRECISION_PLAN]["sha256"] if layout.PRECISION_PLAN in digests else None,
            engine_file=built.engine_file,
            options={**inputs["options"], "calibration": calibration},
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
        _make_readable(out, [layout.MANIFEST])
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
    if not (out / layout.MANIFEST).is_file():
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


def _remove_stale(out: Path, backend: Backend) -> None:
    """Drop the other backends' engine files so a directory never holds two engines, and the
    parity report of the engine being replaced (it would describe an engine that is gone)."""
    for name in backend_names():
        if name == backend.name:
            continue
        try:
            other = backend_for(name)
        except EngineError:  # a plug-in backend not installed here wrote nothing here either
            continue
        for rel in other.stale_files:
            (out / rel).unlink(missing_ok=True)
    reports = layout.report_dir(out)
    if reports.is_dir():
        _LOG.info("removing the previous engine's report in %s", reports)
        shutil.rmtree(reports, ignore_errors=True)


def _export_and_plan(vocoder: Vocoder, reference: TorchRunner, out: Path, staging: Path, steps: _Steps,
                     opts: BuildOptions) -> tuple[list[str], str | None]:
    """Steps 2-3 into ``staging``, then rename every produced file into ``out``."""
    steps.start(2, "export", f"exporting fp32 ONNX (opset {opts.opset})")
    export_onnx(vocoder, staging / layout.FP32_ONNX, opset=opts.opset, verify=opts.verify_export,
                reference=reference)
    calibration = None
    if opts.precision == "fp16":
        mels, calibration = calibration_mels(vocoder.spec)
        steps.start(3, "precision", f"planning FP16 precision on {calibration}")
        plan_fp16(staging / layout.FP32_ONNX, staging / layout.FP16_ONNX, staging / layout.PRECISION_PLAN,
                  vocoder, mels, reference=reference)
    else:
        steps.start(3, "precision", f"{opts.precision} engine: no FP16 precision plan")
        for stale in (layout.FP16_ONNX, layout.PRECISION_PLAN):
            (out / stale).unlink(missing_ok=True)
    produced = []
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        rel = path.relative_to(staging).as_posix()
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        produced.append(rel)
    return produced, calibration
