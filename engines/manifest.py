"""``manifest.json``: what an engine directory holds and the proof that it is intact.

The manifest is the commit point of a build (written last, atomically): a directory without one
is not an engine. It records every artifact's sha256 and size, so :func:`verify_engine_dir`
can refuse a truncated or corrupted file *before* TensorRT or ONNX Runtime deserialises it (a
damaged plan can crash the process instead of raising), and it records the TensorRT version and
GPU a plan was built for, because a plan runs only there. Every failure is an
:class:`EngineError` with one line naming the file or both machines and the rebuild command.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

from .. import __version__ as HIFITRT_VERSION
from ..jsonfile import write_json
from ..errors import EngineError
from . import layout
from .backends import backend_for, backend_names
from ..export.spec import VocoderSpec
from .machine import DeviceInfo, Machine, current_machine
from .profiles import ShapeProfile, default_profiles, profiles_to_list
from .tensorrt_common import device_index

SCHEMA = "hifitrt.engine-manifest"
SCHEMA_VERSION = 1
_CHUNK = 1 << 20


@dataclass
class Manifest:
    """The parsed ``manifest.json`` (field names and layout: docs/INTERFACES.md).

    ``build_key`` and ``build_inputs`` (additions to the documented fields): the inputs of the
    build and their hash; a later build with the same key reuses this directory instead of
    rebuilding, and the inputs let it say what changed when it does not.

    ``profiles`` holds :class:`~hifitrt.engines.profiles.ShapeProfile` objects (JSON entries
    passed in are read into them); :meth:`to_dict` writes them back as the same JSON objects,
    so reading and rewriting a manifest keeps its ``manifest_sha256`` seal.
    """

    source: dict[str, Any]
    backend: dict[str, Any]
    device: dict[str, Any] | None
    precision: str
    profiles: tuple[ShapeProfile, ...]
    onnx_digest: str
    precision_plan_digest: str | None
    engine_file: str
    options: dict[str, Any]
    artifacts: dict[str, dict[str, Any]]
    quick_parity: dict[str, Any] | None = None
    build_seconds: float = 0.0
    created: str = ""
    hifitrt_version: str = HIFITRT_VERSION
    build_key: str = ""
    build_inputs: dict[str, Any] | None = None
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Profiles are ShapeProfile objects in memory whatever the caller passed (a manifest's
        # JSON entries are read with ShapeProfile.from_dict), so no consumer walks dicts.
        self.profiles = _as_profiles(self.profiles)

    # -------------------------------------------------------------------------- conversions
    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json`` (profiles as their dicts, the same JSON as ever)."""
        data = dataclasses.asdict(self)
        data["profiles"] = profiles_to_list(self.profiles)
        order = ["schema", "schema_version", "hifitrt_version", "created", "build_seconds", "build_key"]
        return {**{k: data.pop(k) for k in order}, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "manifest") -> "Manifest":
        if not isinstance(data, Mapping):
            raise EngineError(f"{where} is not a JSON object: {_REBUILD_GENERIC}")
        if data.get("schema") != SCHEMA:
            raise EngineError(
                f"{where} has schema {data.get('schema')!r}, expected {SCHEMA!r}: this directory was not "
                f"written by hifitrt; {_REBUILD_GENERIC}"
            )
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EngineError(
                f"{where} has schema version {version!r}, this hifitrt {HIFITRT_VERSION} reads version "
                f"{SCHEMA_VERSION}: {_REBUILD_GENERIC}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}  # type: ignore[misc]
        missing = sorted(required - set(data))
        if missing:
            raise EngineError(f"{where} lacks {', '.join(missing)}: it is damaged; {_REBUILD_GENERIC}")
        if not isinstance(data["profiles"], list):
            raise EngineError(f"{where}: profiles is not a list; the manifest is damaged, {_REBUILD_GENERIC}")
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in names})
        except EngineError as exc:  # a damaged profile entry
            raise EngineError(f"{where}: {exc}") from None
        manifest._check_types(where)
        return manifest

    def _check_types(self, where: str) -> None:
        def bad(what: str) -> EngineError:
            return EngineError(f"{where}: {what}; the manifest is damaged, {_REBUILD_GENERIC}")

        if not isinstance(self.backend, Mapping) or self.backend.get("name") not in backend_names():
            raise bad(f"backend {self.backend!r} is not one of {', '.join(backend_names())}")
        if self.precision not in ("fp16", "fp32", "bf16"):
            raise bad(f"precision {self.precision!r} is not fp16, fp32 or bf16")
        if not isinstance(self.artifacts, Mapping) or not self.artifacts:
            raise bad("it lists no artifacts")
        for rel, entry in self.artifacts.items():
            _safe_relpath(rel, where)
            if not isinstance(entry, Mapping) or not isinstance(entry.get("sha256"), str) \
                    or not isinstance(entry.get("bytes"), int):
                raise bad(f"artifact entry {rel!r} lacks sha256/bytes")
        if not isinstance(self.engine_file, str) or self.engine_file not in self.artifacts:
            raise bad(f"engine file {self.engine_file!r} is not among its artifacts")
        if not isinstance(self.source, Mapping) or not isinstance(self.source.get("spec"), Mapping):
            raise bad("source.spec is missing")
        try:
            self.spec
        except TypeError as exc:  # a field missing or unknown: VocoderSpec(...) refuses it
            raise bad(f"source.spec is not a vocoder spec ({exc})") from None

    # -------------------------------------------------------------------------- conveniences
    @property
    def backend_name(self) -> str:
        return str(self.backend["name"])

    @property
    def spec(self) -> VocoderSpec:
        """The vocoder's :class:`~hifitrt.export.spec.VocoderSpec`."""
        return VocoderSpec.from_dict(self.source["spec"])

    @property
    def device_info(self) -> DeviceInfo | None:
        return DeviceInfo.from_dict(self.device)

    def rebuild_command(self, engine_dir: str | os.PathLike[str]) -> str:
        """The CLI line that rebuilds this engine in place (for error messages).

        It repeats what the build was asked (``build_inputs``), not what it produced: an engine
        built with ``--backend auto`` is rebuilt with ``auto``, which chooses again on the
        machine the message is read on (the backend it chose may be missing there), and the
        requested precision (``auto`` may have become fp32 or bf16). Profiles are named when
        they are not the backend's defaults, so the rebuilt engine takes the same shapes.
        """
        asked = self.build_inputs or {}
        location = str(self.source.get("location") or "SOURCE")
        parts = ["tts-build-engine", "build", shlex.quote(location)]
        if self.source.get("voice"):
            parts += ["--voice", shlex.quote(str(self.source["voice"]))]
        parts += ["--out", shlex.quote(str(engine_dir)), "--backend", str(asked.get("backend") or self.backend_name),
                  "--precision", str(asked.get("precision") or self.precision)]
        if not self._default_profiles():
            for profile in self.profiles:
                parts += ["--profile", shlex.quote(profile.to_text())]
        return " ".join(parts + ["--force"])

    def _default_profiles(self) -> bool:
        """Whether the profiles are a build's defaults (the GPU or the CPU set) for this vocoder."""
        try:
            min_frames = self.spec.min_frames
        except Exception:  # noqa: BLE001 - a damaged spec: the rebuild line names the profiles
            return not self.profiles
        return not self.profiles or tuple(self.profiles) in (default_profiles(min_frames, cpu=True),
                                                             default_profiles(min_frames, cpu=False))


_REBUILD_GENERIC = "rebuild it with tts-build-engine build SOURCE --out ENGINE_DIR --force"


def _as_profiles(items: Iterable[ShapeProfile | Mapping[str, Any]]) -> tuple[ShapeProfile, ...]:
    """``items`` as ShapeProfile objects: a JSON entry (Mapping) is read, a ShapeProfile kept."""
    result = []
    for item in items:
        if not isinstance(item, (ShapeProfile, Mapping)):
            raise EngineError(f"shape profile entry {item!r} is not an object: the manifest is damaged; "
                              f"{_REBUILD_GENERIC}")
        result.append(item if isinstance(item, ShapeProfile) else ShapeProfile.from_dict(item))
    return tuple(result)


def _safe_relpath(rel: str, where: str) -> PurePosixPath:
    """Artifact paths are relative, POSIX, inside the directory (a tampered manifest must not
    make hifitrt hash or load files elsewhere)."""
    path = PurePosixPath(rel) if isinstance(rel, str) else None
    if path is None or not rel or path.is_absolute() or ".." in path.parts or "\\" in rel:
        raise EngineError(f"{where} names artifact {rel!r} outside the engine directory: {_REBUILD_GENERIC}")
    return path


# ------------------------------------------------------------------------------ read / write
def manifest_path(engine_dir: str | os.PathLike[str]) -> Path:
    return Path(engine_dir) / layout.MANIFEST


INTEGRITY_FIELD = "manifest_sha256"
"""sha256 of the manifest's own content (every other field), so an edited spec, profile or
option is refused like a damaged artifact instead of making the engine load and misbehave."""


def manifest_body_digest(data: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of every field except :data:`INTEGRITY_FIELD`."""
    body = {k: v for k, v in data.items() if k != INTEGRITY_FIELD}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(engine_dir: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically (a reader sees the old manifest or the new one),
    sealed with :data:`INTEGRITY_FIELD`."""
    path = manifest_path(engine_dir)
    data = json.loads(json.dumps(manifest.to_dict()))  # the exact values a reader will parse
    data[INTEGRITY_FIELD] = manifest_body_digest(data)
    return write_json(path, data, schema=SCHEMA, version=SCHEMA_VERSION, strict=False)


def _verify_manifest_seal(root: Path, manifest: Manifest) -> None:
    path = manifest_path(root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path} cannot be read ({_one_line(exc)}): {_REBUILD_GENERIC}") from exc
    recorded = data.get(INTEGRITY_FIELD)
    if recorded is None:
        raise EngineError(f"{path} has no {INTEGRITY_FIELD} (written by an older hifitrt or by hand); "
                          f"rebuild with {manifest.rebuild_command(root)}")
    if recorded != manifest_body_digest(data):
        raise EngineError(f"{path} was edited after the build (its content no longer matches its "
                          f"{INTEGRITY_FIELD}); rebuild with {manifest.rebuild_command(root)}")


def read_manifest(engine_dir: str | os.PathLike[str]) -> Manifest:
    """Parse ``DIR/manifest.json``; EngineError when missing, unparseable or of another schema."""
    path = manifest_path(engine_dir)
    if not Path(engine_dir).is_dir():
        raise EngineError(f"engine directory {engine_dir} does not exist: build one with tts-build-engine build")
    if not path.is_file():
        raise EngineError(
            f"{engine_dir} has no {layout.MANIFEST}: it is not a finished engine directory (a build may have been "
            "interrupted); build it with tts-build-engine build SOURCE --out " + str(engine_dir)
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EngineError(f"{path} cannot be read ({_one_line(exc)}): {_REBUILD_GENERIC}") from exc
    return Manifest.from_dict(data, where=str(path))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ------------------------------------------------------------------------------ digests
def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(sha256 hex, size in bytes) of one file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def artifact_digests(engine_dir: str | os.PathLike[str], relpaths: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{relpath: {"sha256", "bytes"}} for files of ``engine_dir`` (relpaths in POSIX form)."""
    root = Path(engine_dir)
    result: dict[str, dict[str, Any]] = {}
    for rel in sorted(set(str(PurePosixPath(Path(r).as_posix())) for r in relpaths)):
        _safe_relpath(rel, str(root))
        digest, size = file_digest(root / rel)
        result[rel] = {"sha256": digest, "bytes": size}
    return result


# ------------------------------------------------------------------------------ verify
def verify_engine_dir(
    engine_dir: str | os.PathLike[str],
    *,
    for_this_machine: bool = True,
    machine: Machine | None = None,
    trt_module: Any = None,
    device: Any = None,
) -> Manifest:
    """Check an engine directory without deserialising anything; return its manifest.

    1. the manifest parses and has hifitrt's schema;
    2. for machine-bound backends (TensorRT) and ``for_this_machine``: the recorded TensorRT
       version and GPU match ``machine`` (default: :func:`current_machine`, with ``trt_module``
       standing in for ``tensorrt`` in tests, and ``device`` — ``"cuda:N"``, the GPU the engine
       will run on — choosing the GPU), as the backend's ``check_machine`` decides;
    3. the manifest's own content matches its :data:`INTEGRITY_FIELD` seal;
    4. every artifact exists with the recorded size and sha256.
    Raises :class:`EngineError` naming the file or both machines, with the rebuild command.
    """
    root = Path(engine_dir)
    manifest = read_manifest(root)
    backend = backend_for(manifest.backend_name)
    if for_this_machine and backend.machine_bound:
        here = machine if machine is not None else current_machine(trt_module, device_index(device))
        backend.check_machine(manifest, here, root)
    _verify_manifest_seal(root, manifest)
    for rel, entry in manifest.artifacts.items():
        _verify_artifact(root, rel, entry, manifest)
    return manifest


def _verify_artifact(root: Path, rel: str, entry: Mapping[str, Any], manifest: Manifest) -> None:
    path = root / rel
    rebuild = f"rebuild with {manifest.rebuild_command(root)}"
    if not path.is_file():
        raise EngineError(f"engine file {rel} is missing from {root}; {rebuild}")
    size = path.stat().st_size
    expected = int(entry["bytes"])
    if size != expected:
        state = "truncated" if size < expected else "damaged"
        raise EngineError(
            f"engine file {rel} is {state} ({size} bytes, the manifest says {expected}) or was replaced by "
            f"another file; {rebuild}"
        )
    digest, _ = file_digest(path)
    if digest != entry["sha256"]:
        raise EngineError(f"engine file {rel} is damaged (sha256 mismatch); {rebuild}")


# ------------------------------------------------------------------------------ updates
def update_quick_parity(engine_dir: str | os.PathLike[str], summary: Mapping[str, Any] | None) -> Manifest:
    """Record the quick parity summary in the manifest (atomic rewrite; artifacts untouched)."""
    manifest = read_manifest(engine_dir)
    manifest.quick_parity = None if summary is None else json.loads(json.dumps(dict(summary), default=_jsonable))
    write_manifest(engine_dir, manifest)
    return manifest


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays, paths and dataclasses in a parity summary become JSON."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (Path, PurePosixPath)):
        return str(value)
    return str(value)
