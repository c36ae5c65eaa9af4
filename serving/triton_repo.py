"""Write a Triton Inference Server model repository for hifitrt engine directories.

Per engine directory ``tts-build-engine triton`` writes:

* ``NAME``: a Python-backend model running ``VocoderEngine.batch`` (``1/model.py`` from
  ``serving/triton_model`` plus the engine directory copied to ``1/engine``). Its input ``mel``
  has ``allow_ragged_batch: true``, so Triton's dynamic batcher hands mels of *different*
  lengths to one ``execute()`` call, where hifitrt's exact mixed-length batching runs;
* ``NAME_plan`` (TensorRT engine) or ``NAME_onnx`` (ONNX Runtime engine): a plain model served
  by Triton's own backend. Triton batches only requests of identical shape there, so it suits
  clients that send fixed-length chunks; one instance group lists every optimization profile
  so each instance picks the profile that fits the request (Triton sends a batch to any free
  instance, whatever its shape, so an instance limited to one profile would fail the shapes
  only another profile covers).

Every ``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf message
(``tritonclient.grpc.model_config_pb2``), written as text, read back with
``google.protobuf.text_format`` (which rejects unknown fields and enum values) and then checked
for what the parser cannot know: dims against the engine's ONNX graph and spec, and
``max_batch_size`` against the engine's profiles. The repository is assembled in a staging
directory and each model directory is moved into place only when all of them passed.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..engines import layout
from ..engines.manifest import Manifest, verify_engine_dir
from ..errors import ServingError

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / "triton_model" / "model.py"
CONFIG = "config.pbtxt"
VERSION = "1"
ENGINE_SUBDIR = "engine"
INPUT, OUTPUT, CHECKSUM = "mel", "wav", "mel_checksum"
PLAIN_PLATFORMS = {"tensorrt": "tensorrt_plan", "onnxruntime": "onnxruntime_onnx"}
PLAIN_SUFFIXES = {"tensorrt": "_plan", "onnxruntime": "_onnx"}
PLATFORM_BACKENDS = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime"}
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
INSTALL_HINT = "pip install 'tritonclient[http,grpc]' (or: pip install 'hifitrt[triton]')"


@dataclass(frozen=True)
class RepositoryOptions:
    """How Triton should batch and queue requests (the same for every model written).

    ``max_batch``: requests per ``execute()`` for the Python model; plain models use the
    smallest ``batch_max`` of the engine's profiles unless this is smaller.
    ``max_queue`` / ``queue_timeout_us``: Triton's queue policy: at most that many waiting
    requests (more are rejected at once) and each is rejected after that long in the queue.
    ``plain``: also write the ``tensorrt_plan`` / ``onnxruntime_onnx`` model.
    """

    max_batch: int | None = None
    max_queue_delay_us: int = 2000
    max_queue: int = 64
    queue_timeout_us: int = 10_000_000
    instances: int = 1
    plain: bool = True

    def check(self) -> None:
        """ServingError naming the first out-of-range option (as its CLI flag)."""
        minimums = {"max_batch": 1, "max_queue_delay_us": 0, "max_queue": 1, "queue_timeout_us": 1, "instances": 1}
        for name, minimum in minimums.items():
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ServingError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}")


DEFAULT_PYTHON_MAX_BATCH = 8


@dataclass(frozen=True)
class WrittenModel:
    """One model directory of the repository (``engine_dir``: the engine it serves)."""

    name: str
    kind: str  # "python", "tensorrt_plan" or "onnxruntime_onnx"
    directory: Path
    max_batch_size: int
    engine_dir: Path


@dataclass
class TritonRepository:
    """What :func:`write_repository` wrote."""

    path: Path
    models: list[WrittenModel] = field(default_factory=list)


# ------------------------------------------------------------------------------ schema
def _pb() -> Any:
    """Triton's ModelConfig protobuf module (from tritonclient[grpc]), or a clear error."""
    try:
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as exc:  # tritonclient.grpc raises RuntimeError without grpc
        raise ServingError(f"Triton's model-config schema is not installed ({exc}): {INSTALL_HINT}") from exc
    return model_config_pb2


def parse_config(text: str, where: str = CONFIG) -> Any:
    """Parse config.pbtxt text with Triton's schema; ServingError naming the bad field."""
    from google.protobuf import text_format

    pb = _pb()
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        raise ServingError(f"{where} does not match Triton's model configuration schema: {exc}") from exc


def config_backend(config: Any) -> str:
    """The Triton backend that serves a parsed config ("python", "tensorrt", "onnxruntime")."""
    return config.backend or PLATFORM_BACKENDS.get(config.platform, config.platform)


def read_config(model_dir: str | os.PathLike[str]) -> Any:
    path = Path(model_dir) / CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ServingError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_config(text, where=str(path))


# ------------------------------------------------------------------------------ configs
def _queue_policy(config: Any, pb: Any, options: RepositoryOptions) -> None:
    batching = config.dynamic_batching
    batching.max_queue_delay_microseconds = options.max_queue_delay_us
    policy = batching.default_queue_policy
    policy.max_queue_size = options.max_queue
    policy.timeout_action = pb.ModelQueuePolicy.REJECT
    policy.default_timeout_microseconds = options.queue_timeout_us
    policy.allow_timeout_override = True


def python_config(name: str, manifest: Manifest, manifest_sha256: str, options: RepositoryOptions) -> Any:
    """The Python-backend model: ragged ``mel`` [C, -1] in, ``wav`` [-1] out, one engine copy."""
    pb = _pb()
    config = pb.ModelConfig(name=name, backend="python",
                            max_batch_size=options.max_batch or DEFAULT_PYTHON_MAX_BATCH)
    config.input.add(name=INPUT, data_type=pb.TYPE_FP32, dims=[int(manifest.spec.in_channels), -1],
                     allow_ragged_batch=True)
    config.output.add(name=OUTPUT, data_type=pb.TYPE_FP32, dims=[-1])
    config.output.add(name=CHECKSUM, data_type=pb.TYPE_FP64, dims=[1])
    _queue_policy(config, pb, options)
    gpu = manifest.backend_name == "tensorrt"
    kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=options.instances, kind=kind)
    for key, value in (("engine_dir", ENGINE_SUBDIR), ("engine_backend", manifest.backend_name),
                       ("manifest_sha256", manifest_sha256)):
        config.parameters[key].string_value = value
    return config


def plain_config(name: str, manifest: Manifest, options: RepositoryOptions) -> Any:
    """The plain TensorRT / ONNX Runtime model (batches only equal-length requests)."""
    pb = _pb()
    backend = manifest.backend_name
    profiles = manifest.profiles
    config = pb.ModelConfig(name=name, platform=PLAIN_PLATFORMS[backend],
                            max_batch_size=plain_max_batch(manifest, options.max_batch))
    config.input.add(name=INPUT, data_type=pb.TYPE_FP32, dims=[int(manifest.spec.in_channels), -1])
    config.output.add(name=OUTPUT, data_type=pb.TYPE_FP32, dims=[1, -1])
    _queue_policy(config, pb, options)
    if backend == "tensorrt":
        group = config.instance_group.add(count=options.instances, kind=pb.ModelInstanceGroup.KIND_GPU)
        group.profile.extend(str(i) for i in range(len(profiles)))
        if len(profiles) > 1:
            # Triton's docs recommend preferred sizes only for multi-profile TensorRT engines.
            sizes = sorted({p.batch_opt for p in profiles} | {config.max_batch_size})
            config.dynamic_batching.preferred_batch_size.extend(s for s in sizes if s <= config.max_batch_size)
            # Allocate the context for the profile in use, not the largest of all profiles.
            config.parameters["execution_context_allocation_strategy"].string_value = "ON_PROFILE_CHANGE"
    else:
        config.instance_group.add(count=options.instances, kind=pb.ModelInstanceGroup.KIND_CPU)
    return config


def plain_max_batch(manifest: Manifest, requested: int | None) -> int:
    """Largest batch every profile accepts, so any batch Triton forms fits the profile it picks."""
    profiles = manifest.profiles
    limit = min((p.batch_max for p in profiles), default=requested or 1)
    return min(limit, requested) if requested else limit


# ------------------------------------------------------------------------------ checks
def check_config(config: Any, manifest: Manifest, engine_dir: Path, kind: str, where: str) -> None:
    """What Triton's parser does not check: tensors against the engine, batch sizes against
    the profiles, instance profiles against the engine (ServingError naming the field)."""
    def fail(what: str) -> ServingError:
        return ServingError(f"{where}: {what}; regenerate it with tts-build-engine triton")

    channels = int(manifest.spec.in_channels)
    inputs = {t.name: t for t in config.input}
    outputs = {t.name: t for t in config.output}
    if set(inputs) != {INPUT}:
        raise fail(f"inputs are {sorted(inputs)}, the vocoder takes only {INPUT!r}")
    mel = inputs[INPUT]
    if list(mel.dims) != [channels, -1]:
        raise fail(f"input {INPUT} dims {list(mel.dims)} do not match the engine's [{channels}, -1]")
    if OUTPUT not in outputs:
        raise fail(f"output {OUTPUT!r} is missing")
    if config.max_batch_size < 1:
        raise fail(f"max_batch_size {config.max_batch_size} must be >= 1 (requests are batched)")
    if config.dynamic_batching.default_queue_policy.max_queue_size < 1:
        raise fail("the queue is unbounded (default_queue_policy.max_queue_size is 0)")
    if kind == "python":
        if not mel.allow_ragged_batch:
            raise fail("input mel lacks allow_ragged_batch, so mels of different lengths would not batch")
        return
    graph_channels = _onnx_input_channels(engine_dir / layout.onnx_for(manifest.precision))
    if graph_channels is not None and graph_channels != channels:
        raise fail(f"the engine's ONNX graph takes {graph_channels} mel channels, the config says {channels}")
    profiles = manifest.profiles
    if profiles:
        for group in config.instance_group:
            for index in group.profile:
                if not index.isdigit() or int(index) >= len(profiles):
                    raise fail(f"instance group profile {index!r} is not one of the engine's "
                               f"{len(profiles)} profiles (0..{len(profiles) - 1})")
        smallest = min(p.batch_max for p in profiles)
        if config.max_batch_size > smallest:
            worst = min(profiles, key=lambda p: p.batch_max)
            raise fail(f"max_batch_size {config.max_batch_size} exceeds profile {worst.name}'s batch_max {smallest}")
        too_big = [s for s in config.dynamic_batching.preferred_batch_size if s > config.max_batch_size]
        if too_big:
            raise fail(f"preferred_batch_size {too_big} exceeds max_batch_size {config.max_batch_size}")


def _onnx_input_channels(path: Path) -> int | None:
    """Channel dim of the graph's ``mel`` input, read without loading weights; None if absent."""
    if not path.is_file():
        return None
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        if value.name == INPUT:
            dims = value.type.tensor_type.shape.dim
            if len(dims) == 3 and dims[1].HasField("dim_value"):
                return int(dims[1].dim_value)
    return None


# ------------------------------------------------------------------------------ writing
def default_model_name(engine_dir: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", engine_dir.resolve().name).strip("._-")
    return name or "vocoder"


def write_repository(
    engine_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
    options: RepositoryOptions | None = None,
) -> TritonRepository:
    """Write (or add to) the model repository ``out``; a model directory of the same name is
    replaced. Nothing in ``out`` changes unless every model was written and checked."""
    options = options or RepositoryOptions()
    options.check()
    _pb()  # fail before copying anything when the schema is not installed
    dirs = [Path(d) for d in engine_dirs]
    if not dirs:
        raise ServingError("give at least one engine directory")
    names = list(names or [])
    if len(names) > len(dirs):
        raise ServingError(f"{len(names)} names for {len(dirs)} engine directories")
    names += [default_model_name(d) for d in dirs[len(names):]]
    for name in names:
        if not _NAME_OK.match(name):
            raise ServingError(f"model name {name!r} is not valid for Triton (letters, digits, _ . -)")
    planned: list[tuple[str, str, Path]] = []
    for name, engine_dir in zip(names, dirs):
        manifest = verify_engine_dir(engine_dir, for_this_machine=False)
        planned.append((name, "python", engine_dir))
        if options.plain:
            planned.append((name + PLAIN_SUFFIXES[manifest.backend_name], PLAIN_PLATFORMS[manifest.backend_name],
                            engine_dir))
    seen = [p[0] for p in planned]
    duplicates = sorted({n for n in seen if seen.count(n) > 1})
    if duplicates:
        raise ServingError(f"model names {duplicates} are used twice; pass --name for each engine")

    repo = Path(out)
    repo.mkdir(parents=True, exist_ok=True)
    result = TritonRepository(path=repo)
    with tempfile.TemporaryDirectory(prefix=f".{repo.name}.staging-", dir=repo.parent) as staging_name:
        staging = Path(staging_name)
        for name, kind, engine_dir in planned:
            result.models.append(_write_model(staging, repo, name, kind, engine_dir, options))
        for model in result.models:
            _move_into_place(staging / model.name, model.directory)
    return result


def _write_model(staging: Path, repo: Path, name: str, kind: str, engine_dir: Path,
                 options: RepositoryOptions) -> WrittenModel:
    """Write model ``name`` into ``staging``; the returned paths are where it will live in ``repo``."""
    model_dir = staging / name
    version = model_dir / VERSION
    version.mkdir(parents=True)
    if kind == "python":
        copy = version / ENGINE_SUBDIR
        _copy_engine(engine_dir, copy)
        manifest = verify_engine_dir(copy, for_this_machine=False)
        from ..engines.manifest import file_digest

        digest, _ = file_digest(copy / layout.MANIFEST)
        shutil.copyfile(TEMPLATE, version / "model.py")
        config = python_config(name, manifest, digest, options)
        checked_dir = copy
    else:
        manifest = verify_engine_dir(engine_dir, for_this_machine=False)
        target = version / ("model.plan" if kind == "tensorrt_plan" else "model.onnx")
        shutil.copyfile(engine_dir / manifest.engine_file, target)
        config = plain_config(name, manifest, options)
        checked_dir = engine_dir
    text = _config_text(config, kind, options)
    where = f"{name}/{CONFIG}"
    parsed = parse_config(text, where=where)  # what Triton will read, not what we meant to write
    check_config(parsed, manifest, checked_dir, kind, where)
    (model_dir / CONFIG).write_text(text, encoding="utf-8")
    log.info("wrote Triton model %s (%s, max_batch_size %d)", name, kind, parsed.max_batch_size)
    served_engine = repo / name / VERSION / ENGINE_SUBDIR if kind == "python" else engine_dir
    return WrittenModel(name, kind, repo / name, int(parsed.max_batch_size), served_engine)


def _config_text(config: Any, kind: str, options: RepositoryOptions) -> str:
    from google.protobuf import text_format

    header = [
        "# Written by hifitrt (tts-build-engine triton); checked with Triton's ModelConfig schema.",
        f"# Queue: at most {options.max_queue} waiting requests; more are rejected at once, and a request",
        f"# waiting longer than {options.queue_timeout_us} us is rejected (timeout_action REJECT, the default).",
    ]
    if kind == "python":
        header.append("# allow_ragged_batch: mels of different lengths reach one execute(); VocoderEngine.batch runs them.")
    else:
        header.append("# Triton batches only requests with identical mel shapes for this model.")
    return "\n".join(header) + "\n" + text_format.MessageToString(config, use_short_repeated_primitives=True)


def _copy_engine(engine_dir: Path, target: Path) -> None:
    """Copy the manifest and the artifacts it lists (not reports, caches or locks)."""
    manifest = verify_engine_dir(engine_dir, for_this_machine=False)
    for rel in [layout.MANIFEST, *manifest.artifacts]:
        destination = target / rel
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(engine_dir / rel, destination)


def _move_into_place(source: Path, destination: Path) -> None:
    """Replace ``destination`` with ``source`` (each model directory switches in one rename)."""
    if destination.exists():
        old = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, old)
        os.replace(source, destination)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, destination)
