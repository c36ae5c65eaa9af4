"""Engine subcommands: inspect, vocode, export, build, check, bench."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hifitrt.errors import HifitrtError


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="'default', a ModelScope model id or directory, a voice/voc "
                   "directory, a KAN-TTS checkpoint, a classic HiFi-GAN directory, or a TorchScript file")
    p.add_argument("--voice", help="voice of a ModelScope model directory (default: the first listed)")


# ------------------------------------------------------------------------------------ inspect

def cmd_inspect(args: argparse.Namespace) -> int:
    target = Path(args.source)
    if (target / "manifest.json").is_file():
        from hifitrt.engines.inspect import inspect_engine_dir

        print(inspect_engine_dir(target))
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
    import numpy as np
    import torch

    from hifitrt.export.audio import read_wav, write_wav
    from hifitrt.export.load import load_vocoder
    from hifitrt.export.mel import mel_config_for, wav_to_mel

    vocoder = load_vocoder(args.source, voice=args.voice)
    spec = vocoder.spec
    src = Path(args.input)
    if src.suffix == ".npy":
        mel = np.load(src, allow_pickle=False).astype(np.float32)
    else:
        wav, rate = read_wav(src)
        if rate != spec.sample_rate:
            raise HifitrtError(f"{src}: sample rate {rate} Hz, the vocoder needs {spec.sample_rate} Hz")
        mel = wav_to_mel(wav, mel_config_for(spec.sample_rate, spec.hop, spec.n_mels))
    if args.engine:
        from hifitrt.runtime import VocoderEngine

        audio = VocoderEngine.load(args.engine)(mel)
    else:
        with torch.no_grad():
            audio = vocoder.module(torch.from_numpy(mel)[None]).numpy()[0, 0]
    write_wav(Path(args.output), audio, spec.sample_rate)
    print(f"wrote {args.output}: {len(audio) / spec.sample_rate:.2f} s at {spec.sample_rate} Hz")
    return 0


# ------------------------------------------------------------------------------------ export

def cmd_export(args: argparse.Namespace) -> int:
    from hifitrt.export.onnx_export import export_cli

    return export_cli(args)


def cmd_build(args: argparse.Namespace) -> int:
    from hifitrt.validation.chain import build_cli

    return build_cli(args)


def cmd_check(args: argparse.Namespace) -> int:
    from hifitrt.validation.check import check_cli

    return check_cli(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from hifitrt.validation.bench import bench_cli

    return bench_cli(args)


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the engine subcommands to the ``tts-build-engine`` parser."""
    p = sub.add_parser("inspect", help="print a vocoder's spec, or verify an engine directory")
    _add_source(p)
    p.add_argument("--json", action="store_true", help="print the spec as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("vocode", help="turn a mel (.npy) or a wav (re-analysed) into audio")
    _add_source(p)
    p.add_argument("input", help="mel .npy [channels, frames] or a .wav to resynthesise")
    p.add_argument("-o", "--output", required=True, help="output .wav")
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
    p.add_argument("--backend", choices=("auto", "tensorrt", "onnxruntime"), default="auto")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    p.add_argument("--profile", action="append", default=[], metavar="SPEC",
                   help="fixed:BxFRAMES or dynamic:BMIN-BMAXxFMIN-FOPT-FMAX (repeatable)")
    p.add_argument("--workspace-mb", type=int, default=2048, help="TensorRT workspace limit")
    p.add_argument("--hardware-compatibility", choices=("none", "ampere_plus"), default="none")
    p.add_argument("--version-compatible", action="store_true",
                   help="TensorRT version-compatible engine (loading it runs host code; opt in only for your own engines)")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching engine exists")
    p.add_argument("--no-report", action="store_true", help="skip the full parity report")
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
    p.set_defaults(func=cmd_bench)
