"""``tts-build-engine``: a thin command line over the hifitrt Python API.

The CLI is an adapter: each module of this package registers a group of subcommands, turns
flags into keyword arguments, calls one library function and prints the result object it gets
back. No library module prints or sees argparse. User errors (``HifitrtError``) print one
line ``error: ...`` and exit non-zero with no traceback; ``-v`` shows progress details and
``--debug`` re-raises for a traceback.

Subcommand groups (one module each): ``commands`` (inspect, vocode, export, build, check,
bench), ``serve`` (the HTTP service), ``triton`` (Triton model repository and server).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from hifitrt import __version__
from hifitrt.errors import HifitrtError

# Modules that define ``register(subparsers)``; a group whose module is absent is skipped so a
# partial checkout still has a working CLI.
_GROUPS = ("commands", "serve", "triton")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tts-build-engine",
        description="Compile HiFi-GAN TTS vocoders into verified TensorRT / ONNX Runtime engines, and serve them.",
    )
    parser.add_argument("--version", action="version", version=f"hifitrt {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _GROUPS:
        try:
            module = importlib.import_module(f"{__name__}.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{group}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HifitrtError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `tts-build-engine inspect ... | head -2`: the reader left; not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
