"""Engine subcommands: inspect, vocode, export, build, check, bench."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hifitrt.engines.backends import AUTO, PRECISIONS, backend_names
from hifitrt.errors import EngineError


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="'default', a ModelScope model id or directory, a voice/voc "
                   "directory, a KAN-TTS checkpoint, a classic HiFi-GAN directory, or a TorchScript file")
    p.add_argument("--voice", help="voice of a ModelScope model directory (default: the first listed)")


# ------------------------------------------------------------------------------------ inspect

# Names only an engine directory holds: one without its manifest is an unfinished engine, and
# saying "not a vocoder directory" about it would send the user looking in the wrong place.
_ENGINE_MARKS = ("manifest.json", "model.onnx", "model.fp16.onnx", "tensorrt", "onnxruntime", ".build.lock")


def _print_versions() -> None:
    """TensorRT's and torch's CUDA (and the driver's) on one line, plus what disagrees."""
    from hifitrt.engines.tensorrt_install import cuda_mismatch, describe_versions, installed_versions

    versions = installed_versions()
    print(f"versions: {describe_versions(versions)}")
    problem = cuda_mismatch(versions)
    if problem:
        print(f"warning: {problem}")


def cmd_versions(args: argparse.Namespace) -> int:
    _print_versions()
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    target = Path(args.source)
    if target.is_dir() and any((target / name).exists() for name in _ENGINE_MARKS):
        from hifitrt.engines.describe import inspect_engine_dir

        print(inspect_engine_dir(target))
        _print_versions()
        return 0
    from hifitrt.export.load import load_vocoder

    vocoder = load_vocoder(args.source, voice=args.voice)
    if args.json:
        print(json.dumps(vocoder.spec.to_dict(), indent=2))
    else:
        print(vocoder.spec.describe())
    return 0


# ------------------------------------------------------------------------------------ vocode

def cmd_vocode(args: argparse.Namespace) -> int:
    """Both paths (engine or PyTorch) go through VocoderEngine: one validation, chunked memory."""
    import sys

    from hifitrt.engines.profiles import default_profiles
    from hifitrt.errors import InputError
    from hifitrt.export.audio import read_mel, read_wav, wav_bytes, write_wav
    from hifitrt.export.load import load_vocoder, require_same_vocoder
    from hifitrt.export.mel import mel_config_for, wav_to_mel
    from hifitrt.runtime import VocoderEngine

    vocoder = load_vocoder(args.source, voice=args.voice)
    spec = vocoder.spec
    src = Path(args.input)
    if not src.is_file():
        raise InputError(f"{src}: no such file (pass a mel .npy or a .wav)")
    if src.suffix.lower() == ".npy":
        mel = read_mel(src)
        if mel.ndim == 3 and mel.shape[0] == 1:
            mel = mel[0]
        if mel.ndim != 2:
            raise InputError(f"{src}: mel has shape {mel.shape}; vocode takes one mel [channels, frames]")
    else:
        wav, rate = read_wav(src)
        if rate != spec.sample_rate:
            raise InputError(f"{src}: sample rate {rate} Hz, the vocoder needs {spec.sample_rate} Hz")
        mel = wav_to_mel(wav, mel_config_for(spec.sample_rate, spec.hop, spec.n_mels))
    if args.engine:
        engine = VocoderEngine.load(args.engine)
        require_same_vocoder(engine.spec, spec, args.engine)
    else:
        engine = VocoderEngine.from_vocoder(vocoder, profiles=default_profiles(spec.min_frames, cpu=True))
    with engine:
        audio = engine(mel)
    seconds = len(audio) / spec.sample_rate
    if args.output == "-":
        sys.stdout.buffer.write(wav_bytes(audio, spec.sample_rate))
        sys.stdout.buffer.flush()
        print(f"wrote {seconds:.2f} s at {spec.sample_rate} Hz to stdout", file=sys.stderr)
        return 0
    write_wav(Path(args.output), audio, spec.sample_rate)
    # -o /dev/stdout: the message must not land in the audio stream
    print(f"wrote {args.output}: {seconds:.2f} s at {spec.sample_rate} Hz",
          file=sys.stderr if str(args.output).startswith("/dev/") else sys.stdout)
    return 0


# ------------------------------------------------------------------------------------ export

def cmd_export(args: argparse.Namespace) -> int:
    """Verified FP32 ONNX; with ``--precision fp16`` also the planned FP16 graph and its plan."""
    from hifitrt.export import export_vocoder

    result = export_vocoder(args.source, args.output, voice=args.voice, precision=args.precision, opset=args.opset)
    for case in result.fp32.parity["cases"]:
        print(f"fp32 parity {case['length']:>6} {case['frames']:>5} frames batch {case['batch']}: "
              f"max abs {case['max_abs']:.2e}")
    plan = result.plan
    if plan is None:
        print(f"wrote {result.output} in {result.seconds:.1f} s")
        return 0
    print(f"fp16 plan: {len(plan.fp32_nodes)} node(s) kept FP32 ({', '.join(plan.kept_islands) or 'none'}); "
          f"SNR {plan.snr_plain_db:.1f} -> {plan.snr_plan_db:.1f} dB, log-mel L1 "
          f"{plan.log_mel_l1_plain:.4f} -> {plan.log_mel_l1:.4f} (plain -> planned), calibrated on "
          f"{result.calibration}")
    print(f"wrote {result.output}, {result.plan_path}, {result.fp32.path} in {result.seconds:.1f} s")
    return 0


# ------------------------------------------------------------------------------------ build

def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def cmd_build(args: argparse.Namespace) -> int:
    """Progress per step, then backend, reuse, quick parity and the report; 1 when parity fails."""
    from hifitrt.engines import BuildOptions
    from hifitrt.validation import build_and_verify, summary_table

    options = BuildOptions(
        backend=args.backend, precision=args.precision, voice=args.voice, profiles=tuple(args.profile or ()),
        workspace_bytes=int(args.workspace_mb) << 20, hardware_compatibility=args.hardware_compatibility,
        version_compatible=args.version_compatible, force=args.force,
        allow_short_profiles=args.allow_short_profiles, device=args.device, bf16_gate=tuple(args.threshold or ()),
    )
    result = build_and_verify(args.source, args.out, options, report=not args.no_report,
                              progress=lambda line: print(line, flush=True))
    b = result.build
    m = b.manifest
    q = result.quick_parity
    print()
    print(f"engine     {result.engine_dir}")
    print(f"backend    {m.backend_name} {m.backend.get('version', '')} ({b.backend_reason or 'as recorded'})")
    if m.backend.get("selection"):  # --backend auto on a CPU: what was timed and why this one
        print(f"           {m.backend['selection']['reason']}")
    print(f"precision  {m.precision}; profiles: " + ", ".join(p.name for p in m.profiles))
    if m.backend.get("precision_reason"):  # OpenVINO bf16|auto: the BF16 plan's verdict with its numbers
        print(f"           {m.backend['precision_reason']}")
    print(f"build      {'reused (same build key, artifacts verified)' if b.reused else 'built: ' + (b.rebuild_reason or 'new')}"
          f" in {b.seconds:.1f} s")
    print(f"quick      worst SNR {_fmt(q['worst_snr_db'], '.1f')} dB, worst max|err| {q['worst_max_abs_error']:.2e}, "
          f"NaN/Inf {q['nonfinite_count']}")
    if result.check is None:
        if result.reused_report is not None:
            print(f"report     {result.reused_report} (from the build; run `tts-build-engine check` to re-measure)")
        else:
            print("report     skipped (--no-report)")
        return 0
    c = result.check
    print(f"report     {c.report.html if c.report else '-'} ({'pass' if c.passed else 'FAIL'}, "
          f"{len(c.cases)} shapes)")
    if not c.passed:
        print("\n" + summary_table(c))
        print(f"\nFAIL: parity thresholds ({c.thresholds.preset}) violated:")
        for line in c.failure_lines():
            print(f"  {line}")
        return 1
    return 0


# ------------------------------------------------------------------------------------ check

def cmd_check(args: argparse.Namespace) -> int:
    """Parity sweep and report; 1 when a threshold fails (naming metric and shape)."""
    from hifitrt.validation import check_engine, summary_table

    result = check_engine(args.engine_dir, inputs=list(args.inputs or ()), report_dir=args.report,
                          thresholds=list(args.threshold or ()))
    print(summary_table(result))
    where = result.report.html if result.report and result.report.html else (result.report.json if result.report else None)
    n = len(result.cases)
    if not result.passed:
        print(f"\nFAIL: {len(result.sweep.failed)} of {n} shapes violate the {result.thresholds.preset} thresholds:")
        for line in result.failure_lines():
            print(f"  {line}")
        print(f"report: {where}")
        return 1
    worst_snr = min(c.metrics.snr_db for c in result.cases)
    print(f"\npass: {n} shapes within the {result.thresholds.preset} thresholds "
          f"(worst SNR {worst_snr:.1f} dB); report: {where}")
    return 0


# ------------------------------------------------------------------------------------ bench

def cmd_bench(args: argparse.Namespace) -> int:
    """Engine vs PyTorch FP32 side by side; the table on stdout, progress on stderr."""
    import sys

    from hifitrt.engines import layout
    from hifitrt.validation import bench_engine

    for flag, value in (("--threads", args.threads), ("--max-batch", args.max_batch), ("--repeats", args.repeats)):
        if value is not None and value < 1:
            raise EngineError(f"{flag} {value}: must be at least 1")
    engine_dir = Path(args.engine_dir)
    if not (engine_dir / layout.MANIFEST).is_file():
        raise EngineError(f"{engine_dir} is not an engine directory (no manifest.json); "
                           "build one with 'tts-build-engine build'")
    if args.cpu_runtimes:
        import json

        from hifitrt.validation.cpu_bench import compare_cpu_runtimes

        table = compare_cpu_runtimes(engine_dir, threads=args.threads,
                                     progress=lambda line: print(line, file=sys.stderr, flush=True))
        print(table.table())
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(table.to_dict(), indent=2) + "\n", encoding="utf-8")
            print(f"wrote {args.json_out}")
        return 0
    result = bench_engine(engine_dir, max_batch=int(args.max_batch), repeats=int(args.repeats), threads=args.threads,
                          progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(result.table())
    _print_versions()
    if args.json_out:
        print(f"wrote {result.write_json(args.json_out)}")
    return 0


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the engine subcommands to the ``tts-build-engine`` parser."""
    p = sub.add_parser("inspect", help="print a vocoder's spec, or verify an engine directory")
    _add_source(p)
    p.add_argument("--json", action="store_true", help="print the spec as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("versions", help="print TensorRT, torch and driver versions with their CUDA versions")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("vocode", help="turn a mel (.npy) or a wav (re-analysed) into audio")
    _add_source(p)
    p.add_argument("input", help="mel .npy [channels, frames] or a .wav to resynthesise")
    p.add_argument("-o", "--output", required=True, help="output .wav ('-': standard output)")
    p.add_argument("--engine", help="engine directory to vocode with instead of PyTorch")
    p.set_defaults(func=cmd_vocode)

    p = sub.add_parser("export", help="export to ONNX (fp32 or planned fp16)")
    _add_source(p)
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 17 to 20 (default 17)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("build", help="load -> export -> precision plan -> engine -> quick parity")
    _add_source(p)
    p.add_argument("--out", required=True, help="engine directory to create or reuse")
    p.add_argument("--backend", choices=(AUTO, *backend_names()), default=AUTO,
                   help="auto: TensorRT with a CUDA GPU; without one, for --precision fp32 or auto, ONNX Runtime "
                   "and OpenVINO are timed after export and the fastest that passes parity is built (fp16: ONNX "
                   "Runtime, bf16: OpenVINO)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16",
                   help="fp16/fp32 (TensorRT, ONNX Runtime); fp32, bf16 or auto for openvino and for --backend auto "
                   "without a GPU (auto: BF16 when the CPU has BF16 units and the plan passes its gate, else FP32)")
    p.add_argument("--profile", action="append", default=[], metavar="SPEC",
                   help="fixed:BxFRAMES or dynamic:BMIN-BMAXxFMIN-FOPT-FMAX (repeatable)")
    p.add_argument("--workspace-mb", type=int, default=2048, help="TensorRT workspace limit")
    p.add_argument("--hardware-compatibility", choices=("none", "ampere_plus"), default="none")
    p.add_argument("--version-compatible", action="store_true",
                   help="TensorRT version-compatible plan: a newer TensorRT runs it through the lean runtime of the "
                   "building version, which must be installed there (docs/TENSORRT.md); hifitrt never allows host code")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching engine exists")
    p.add_argument("--device", metavar="cuda:N",
                   help="TensorRT: the GPU to build on and record, the one the engine will run on (default cuda:0)")
    p.add_argument("--allow-short-profiles", action="store_true",
                   help="accept TensorRT profiles shorter than the vocoder's receptive field (long mels are then "
                   "chunked with truncated context: audibly wrong seams)")
    p.add_argument("--no-report", action="store_true", help="skip the full parity report")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="tighten or loosen the BF16 gate of OpenVINO builds (--precision bf16 or auto; refused "
                   "otherwise): pesq (min, default 4.5), log_mel_l1 (max, default 0.02), nonfinite_count "
                   "(max, default 0); repeatable")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("check", help="parity sweep of an engine against PyTorch; writes report.json/html")
    p.add_argument("engine_dir")
    p.add_argument("--inputs", nargs="*", default=[], help="wav or mel .npy files (default: built-in speech fixtures)")
    p.add_argument("--report", help="report directory (default: ENGINE_DIR/report)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("bench", help="latency, throughput and RTF of an engine vs PyTorch FP32")
    p.add_argument("engine_dir")
    p.add_argument("--json", dest="json_out", help="write results as JSON here")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, help="intra-op threads for both sides (default: usable CPUs)")
    p.add_argument("--cpu-runtimes", action="store_true",
                   help="instead: PyTorch FP32 eager, ONNX Runtime FP32, OpenVINO FP32 and BF16 interleaved in one run")
    p.set_defaults(func=cmd_bench)
