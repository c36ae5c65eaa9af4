"""The OpenVINO engine: the vocoder as OpenVINO IR, compiled for this CPU at load time.

Why OpenVINO: on CPUs its convolution kernels run the FP32 vocoder ~1.5x faster than ONNX
Runtime, and it can run BF16 on the CPU's BF16 units (AVX512-BF16, AMX), about 3x faster
again than FP32 where they exist.

Directory contract (same as the other backends: the manifest hashes every file)::

    openvino/engine.json     what to compile and how (the manifest's ``engine_file``)
    openvino/part_0.xml/.bin one IR per part (FP32 engines: one part, the whole graph)

An engine is a *chain of parts*. An FP32 engine has one part. A BF16 engine (see
:mod:`hifitrt.engines.bf16_plan`) is the FP32 graph cut at upsampling-stage boundaries, each
part compiled with its own ``INFERENCE_PRECISION_HINT``: that is how FP32 islands survive, since
the CPU plugin ignores per-node precision marks set from Python under a BF16 hint (measured,
issue 14). Cuts pass a few plain tensors between parts (the residual stream), so a chain of
FP32 parts gives exactly the whole graph's output.

Threads: intra-op threads default to the cores this process may use (``os.sched_getaffinity``),
one stream; :class:`CompiledChain` keeps a bounded pool of infer requests (one per stream), so
many callers queue for the CPU instead of oversubscribing it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import queue
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..atomic import write_text
from ..errors import EngineError
from . import layout

_LOG = logging.getLogger(__name__)

ENGINE_SCHEMA = "hifitrt.openvino-engine"
ENGINE_JSON = layout.OPENVINO_ENGINE
IR_DIR = layout.OPENVINO_DIR
PLAN_RELPATH = layout.BF16_PLAN
PRECISIONS = ("fp32", "bf16")
# /proc/cpuinfo flags that decide how fast a CPU engine can be (recorded in the manifest).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_fp16")
INSTALL_HINT = "pip install openvino (a regular hifitrt dependency; reinstall hifitrt)"


def import_openvino() -> Any:
    try:
        import openvino as ov  # type: ignore[import-not-found]
    except (ImportError, OSError) as exc:
        raise EngineError(f"OpenVINO is not installed ({exc}): {INSTALL_HINT}") from exc
    return ov


def openvino_version() -> str:
    return str(import_openvino().__version__).split("-")[0]


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------ CPU
@dataclass(frozen=True)
class CpuInfo:
    """The CPU an engine runs on: model name, the ISA flags that matter, OpenVINO's view."""

    model: str
    flags: tuple[str, ...]
    openvino_capabilities: tuple[str, ...]
    cores: int

    @property
    def has_bf16(self) -> bool:
        """OpenVINO runs BF16 natively here (otherwise a BF16 hint silently runs FP32)."""
        return "BF16" in self.openvino_capabilities

    def describe(self) -> str:
        flags = ", ".join(self.flags) or "no AVX2/AVX-512/AMX"
        return f"{self.model} ({self.cores} usable cores; {flags})"

    def bf16_units(self) -> str:
        """In words: which BF16 units the CPU has, for reasons and reports."""
        units = [f for f in ("amx_bf16", "avx512_bf16") if f in self.flags]
        if units:
            return " and ".join(u.upper().replace("_", "-") for u in units)
        return "no BF16 units (neither AVX512-BF16 nor AMX-BF16)"

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "has_bf16": self.has_bf16}


def _proc_cpuinfo() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags":
            flags = set(value.split())
            break
    return model, flags


def cpu_info() -> CpuInfo:
    """This machine's CPU as an engine sees it (never raises)."""
    model, flags = _proc_cpuinfo()
    try:
        caps = tuple(str(c) for c in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception as exc:  # OpenVINO missing or its CPU plugin broken: report, do not fail
        _LOG.debug("OpenVINO CPU capabilities unavailable: %s", exc)
        caps = ()
    return CpuInfo(model, tuple(f for f in CPU_FLAGS if f in flags), caps, usable_cores())


# ------------------------------------------------------------------------------------ config
@dataclass
class EnginePart:
    """One compiled piece of the chain: its IR files, precision hint and tensor names."""

    name: str
    xml: str
    weights: str
    hint: str  # OpenVINO INFERENCE_PRECISION_HINT: "f32" or "bf16"
    inputs: list[str]
    outputs: list[str]


@dataclass
class OpenVinoConfig:
    """``openvino/engine.json``: the parts in order and how to compile them."""

    precision: str
    parts: list[EnginePart]
    openvino_version: str
    cpu: dict[str, Any] = field(default_factory=dict)
    threads: int = 0  # 0: the cores this process may use when it loads the engine
    streams: int = 1
    schema: str = ENGINE_SCHEMA
    schema_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OpenVinoConfig":
        if not isinstance(data, Mapping) or data.get("schema") != ENGINE_SCHEMA:
            raise EngineError(f"{ENGINE_JSON} is not a hifitrt OpenVINO engine file; rebuild the engine with --force")
        try:
            parts = [EnginePart(**p) for p in data["parts"]]
            names = {f.name for f in dataclasses.fields(cls)} - {"parts"}
            return cls(parts=parts, **{k: v for k, v in data.items() if k in names})
        except (KeyError, TypeError) as exc:
            raise EngineError(f"{ENGINE_JSON} is incomplete ({exc}); rebuild the engine with --force") from exc

    @property
    def files(self) -> list[str]:
        return [ENGINE_JSON] + [f for p in self.parts for f in (p.xml, p.weights)]


def read_openvino_config(engine_dir: str | os.PathLike[str]) -> OpenVinoConfig:
    path = Path(engine_dir) / ENGINE_JSON
    try:
        return OpenVinoConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise EngineError(f"cannot read {path} ({exc}); rebuild the engine with --force") from exc


# ------------------------------------------------------------------------------------ compile
def compile_properties(hint: str, threads: int | None = None, streams: int = 1) -> dict[str, Any]:
    """CPU plugin properties: precision hint, pinned thread count, streams (latency first)."""
    return {
        "INFERENCE_PRECISION_HINT": hint,
        "INFERENCE_NUM_THREADS": int(threads or usable_cores()),
        "NUM_STREAMS": int(streams),
    }


def compile_model(model: Any, hint: str, threads: int | None = None, streams: int = 1) -> Any:
    """Compile an ``ov.Model`` or a model path (IR or ONNX) for the CPU."""
    ov = import_openvino()
    core = _core()
    try:
        if not isinstance(model, ov.Model):
            model = core.read_model(os.fspath(model))
        return core.compile_model(model, "CPU", compile_properties(hint, threads, streams))
    except RuntimeError as exc:
        raise EngineError(f"OpenVINO cannot compile {model if isinstance(model, (str, Path)) else 'the model'} "
                          f"({' '.join(str(exc).split())[:300]}); rebuild the engine with --force") from exc


_CORE: Any = None


def _core() -> Any:
    """One ``ov.Core`` per process (it owns the plugins; creating many is slow)."""
    global _CORE
    if _CORE is None:
        _CORE = import_openvino().Core()
    return _CORE


def runtime_precisions(compiled: Any) -> dict[str, dict[str, int]]:
    """{op type: {precision: count}} the CPU plugin actually chose (``runtimePrecision``).

    The proof that a part runs in BF16 or stays FP32: the precision hint is only a request.
    """
    counts: dict[str, dict[str, int]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = str(info["layerType"].astype(str)) if "layerType" in info else op.get_type_name()
        if kind in ("Input", "Output", "Parameter", "Result", "Const", "Constant"):
            continue
        precision = str(info["runtimePrecision"].astype(str)) if "runtimePrecision" in info else "?"
        by_kind = counts.setdefault(kind, {})
        by_kind[precision] = by_kind.get(precision, 0) + 1
    return counts


class CompiledChain:
    """Compiled parts run in order, passing tensors by name; safe to call from many threads.

    A bounded pool holds one set of infer requests (one per part) per stream: a caller takes a
    set, runs the chain, returns it. More callers than streams wait instead of oversubscribing
    the cores (the serving worker pool calls engines concurrently).
    """

    def __init__(self, compiled: Sequence[Any], parts: Sequence[EnginePart], streams: int = 1) -> None:
        if not compiled:
            raise EngineError("an OpenVINO engine needs at least one part")
        self.compiled = list(compiled)
        self.parts = list(parts)
        self.streams = max(1, int(streams))
        self._pool: queue.Queue[list[Any]] = queue.Queue()
        for _ in range(self.streams):
            self._pool.put([c.create_infer_request() for c in self.compiled])
        self._output = self.parts[-1].outputs[0]
        self.part_seconds = [0.0] * len(self.parts)

    @contextmanager
    def _requests(self) -> Iterator[list[Any]]:
        requests = self._pool.get()
        try:
            yield requests
        finally:
            self._pool.put(requests)

    def infer(self, mel: np.ndarray) -> np.ndarray:
        """float32 [B, C, T] -> float32 [B, 1, T*hop] (a new array; requests are reused)."""
        tensors: dict[str, np.ndarray] = {self.parts[0].inputs[0]: np.ascontiguousarray(mel, dtype=np.float32)}
        with self._requests() as requests:
            for i, (part, compiled, request) in enumerate(zip(self.parts, self.compiled, requests)):
                start = time.perf_counter()
                request.infer({name: tensors[name] for name in part.inputs})
                for name in part.outputs:
                    tensors[name] = np.array(request.get_tensor(compiled.output(name)).data, dtype=np.float32)
                self.part_seconds[i] = time.perf_counter() - start
        return tensors[self._output]

    def runtime_precisions(self) -> dict[str, dict[str, dict[str, int]]]:
        return {part.name: runtime_precisions(c) for part, c in zip(self.parts, self.compiled)}


def load_chain(engine_dir: str | os.PathLike[str], config: OpenVinoConfig | None = None, *,
               threads: int | None = None, streams: int | None = None) -> CompiledChain:
    """Compile every part of the engine in ``engine_dir`` (verify the manifest first)."""
    root = Path(engine_dir)
    config = config or read_openvino_config(root)
    threads = threads or config.threads or usable_cores()
    streams = streams or config.streams or 1
    if any(p.hint == "bf16" for p in config.parts):
        here = cpu_info()
        if not here.has_bf16:
            _LOG.warning("this BF16 engine runs in FP32 here: %s has %s (built on %s)", here.model,
                         here.bf16_units(), config.cpu.get("model", "another CPU"))
    compiled = [compile_model(root / p.xml, p.hint, threads, streams) for p in config.parts]
    return CompiledChain(compiled, config.parts, streams)


# ------------------------------------------------------------------------------------ build
@dataclass(frozen=True)
class PartSource:
    """An ONNX piece to convert into one engine part (the whole graph for FP32 engines)."""

    name: str
    onnx_path: Path
    hint: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class OpenVinoBuildResult:
    engine_file: str
    config: OpenVinoConfig
    artifacts: list[str]
    seconds: float


def whole_graph_part(onnx_path: str | os.PathLike[str]) -> PartSource:
    """The single FP32 part of an FP32 engine: the graph as it is."""
    import onnx

    model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    return PartSource("all", Path(onnx_path), "f32",
                      tuple(i.name for i in model.graph.input if i.name not in inits),
                      tuple(o.name for o in model.graph.output))


def build_openvino_engine(
    engine_dir: str | os.PathLike[str],
    parts: Sequence[PartSource],
    *,
    precision: str = "fp32",
    check_load: bool = True,
) -> OpenVinoBuildResult:
    """Convert ``parts`` (ONNX) into IR under ``engine_dir/openvino`` and write ``engine.json``.

    IR weights stay FP32 (``compress_to_fp16=False``): precision is chosen per part at compile
    time by its hint, never baked into the weights. ``check_load`` compiles every part once so
    a model OpenVINO cannot run fails the build, not the first request.
    """
    if precision not in PRECISIONS:
        raise EngineError(f"OpenVINO precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    started = time.perf_counter()
    ov = import_openvino()
    root = Path(engine_dir)
    (root / IR_DIR).mkdir(parents=True, exist_ok=True)
    for stale in (root / IR_DIR).glob("part_*"):
        stale.unlink()
    written: list[EnginePart] = []
    for i, source in enumerate(parts):
        xml = f"{IR_DIR}/part_{i}.xml"
        try:
            model = ov.convert_model(os.fspath(source.onnx_path))
            ov.save_model(model, os.fspath(root / xml), compress_to_fp16=False)
        except Exception as exc:  # the converter raises its own error types
            raise EngineError(f"OpenVINO cannot convert {source.onnx_path} "
                              f"({' '.join(str(exc).split())[:300]})") from exc
        written.append(EnginePart(source.name, xml, xml[:-4] + ".bin", source.hint,
                                  list(source.inputs), list(source.outputs)))
    config = OpenVinoConfig(precision=precision, parts=written, openvino_version=openvino_version(),
                            cpu=cpu_info().to_dict())
    if check_load:
        load_chain(root, config)
    write_text(root / ENGINE_JSON, json.dumps(config.to_dict(), indent=2) + "\n")
    seconds = time.perf_counter() - started
    _LOG.info("OpenVINO %s engine: %d part(s) %s in %.1f s", precision, len(written),
              ", ".join(f"{p.name}={p.hint}" for p in written), seconds)
    return OpenVinoBuildResult(ENGINE_JSON, config, config.files, seconds)


# ------------------------------------------------------------------------------------ backend
from .backends import Backend, BackendBuild, BuildOptions, BuildRequest, register  # noqa: E402
from .machine import Machine  # noqa: E402

BF16_CAPABLE = ("bf16", "auto")


class OpenVinoBackend(Backend):
    """OpenVINO IR for the CPU: FP32, or BF16 with measured FP32 islands (``--precision bf16|auto``).

    Not machine-bound: IR is compiled when loaded, so an engine runs on any x86 CPU (a BF16
    engine on a CPU without BF16 units runs FP32, with a warning). The CPU it was built and
    planned on is in the manifest (``backend.cpu``) and in the build key, since a BF16 plan is
    measured on that CPU; so is the BF16 gate (``BuildOptions.bf16_gate``, ``--threshold``).
    """

    name = "openvino"
    label = "OpenVINO"
    stale_files = (ENGINE_JSON,)
    precisions = ("fp32", "bf16", "auto")
    takes_bf16_gate = True

    def runs_on_cpu(self) -> bool:
        return True

    def requested(self, trt_module: Any = None) -> str:
        version = openvino_version()  # EngineError with the install hint when absent
        return f"OpenVINO {version} as requested on {cpu_info().describe()}"

    def key_inputs(self, options: BuildOptions, machine: Machine) -> dict[str, Any]:
        cpu = cpu_info()
        return {
            "options": {"opset": options.opset, "bf16_gate": list(options.bf16_gate)},
            "tensorrt_version": None,
            "gpu": None,
            "providers": None,
            "openvino_version": openvino_version(),
            "cpu": {"model": cpu.model, "flags": list(cpu.flags),
                    "openvino_capabilities": list(cpu.openvino_capabilities)},
        }

    def engine_file(self, precision: str) -> str:
        return ENGINE_JSON

    def build(self, request: BuildRequest) -> BackendBuild:
        out = request.engine_dir
        requested = request.options.precision
        if requested == "fp16":
            raise EngineError("OpenVINO CPU engines are fp32 or bf16 (CPUs run FP16 slower than FP32): "
                              "use --precision fp32, bf16 or auto")
        (out / PLAN_RELPATH).unlink(missing_ok=True)
        fp32_onnx = out / request.onnx_relpath
        work = Path(tempfile.mkdtemp(prefix=".staging-openvino-", dir=str(out)))
        try:
            plan = None
            if requested in BF16_CAPABLE:
                plan = request.bf16_plan if request.bf16_plan is not None else bf16_plan_for(request, fp32_onnx, work)
            precision = "bf16" if plan is not None and plan.passed else "fp32"
            parts = plan.parts if plan is not None and plan.passed else [whole_graph_part(fp32_onnx)]
            result = build_openvino_engine(out, parts, precision=precision)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        artifacts = list(result.artifacts)
        info: dict[str, Any] = {
            "name": self.name, "version": result.config.openvino_version, "providers": [],
            "cpu": result.config.cpu, "precision_requested": requested,
            "parts": [{"name": p.name, "hint": p.hint} for p in result.config.parts],
            "threads": "os.sched_getaffinity (cores usable at load time)",
        }
        if plan is not None:
            plan.write(out / PLAN_RELPATH)
            artifacts.append(PLAN_RELPATH)
            info["precision_reason"] = plan.reason
            info["bf16_plan"] = PLAN_RELPATH
        else:
            info["precision_reason"] = "fp32 as requested"
        if plan is not None and requested == "bf16" and precision != "bf16":
            _LOG.warning("%s", plan.reason)
        return BackendBuild(ENGINE_JSON, info, tuple(artifacts), precision=precision)


def bf16_plan_for(request: BuildRequest, fp32_onnx: Path, work: Path, threads: int | None = None) -> Any:
    """Plan BF16 on the speech fixtures against the vocoder's PyTorch output (needs the vocoder),
    under the gate as ``request.options.bf16_gate`` adjusts it. Also used by ``--backend auto``'s
    CPU selection, which then hands the plan back in ``BuildRequest.bf16_plan``."""
    from ..export.reference import TorchRunner
    from ..export.speech_inputs import calibration_mels, fixture_inputs
    from .bf16_plan import parse_gate_overrides, plan_bf16

    vocoder = getattr(request, "vocoder", None)
    if vocoder is None:
        raise EngineError("a BF16 OpenVINO build needs the loaded vocoder to measure its plan against")
    reference = request.reference if request.reference is not None else TorchRunner(vocoder.module, cache=True)
    mels, note = calibration_mels(vocoder.spec)
    return plan_bf16(fp32_onnx, work, vocoder.spec, mels, fixture_inputs(vocoder.spec), reference,
                     calibration_note=note, gate=parse_gate_overrides(request.options.bf16_gate), threads=threads)


register(OpenVinoBackend())
