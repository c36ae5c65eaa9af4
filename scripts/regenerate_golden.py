"""Regenerate (or compare against) the golden engine baselines in a folder.

    python scripts/regenerate_golden.py tests/golden                       # every ONNX Runtime baseline
    python scripts/regenerate_golden.py tests/golden --only kantts8k-tiny-fp32-onnxruntime
    python scripts/regenerate_golden.py tests/golden --backend tensorrt     # on a GPU machine
    python scripts/regenerate_golden.py tests/golden --compare              # exit 1 on a regression

Regenerate only after an intended change, and say in the commit what changed and why
(:mod:`hifitrt.validation.golden` explains what a baseline holds and what counts as a regression).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from _bootstrap import ensure_hifitrt

ensure_hifitrt()

from hifitrt.validation import golden  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the baseline folder (tests/golden in a checkout)")
    p.add_argument("--compare", action="store_true", help="compare with the baselines instead of rewriting them")
    p.add_argument("--only", action="append", default=[], help="baseline name (repeatable)")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "tensorrt"))
    p.add_argument("--work", type=Path, help="build directory (default: a temporary one; reused builds are fast)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    known = golden.golden_cases(args.backend)
    cases = [c for c in known if not args.only or c.name in args.only]
    if not cases:
        print(f"error: no baseline named {args.only}; known: {', '.join(c.name for c in known)}", file=sys.stderr)
        return 2
    bad = 0
    with tempfile.TemporaryDirectory(prefix="hifitrt-golden-") as tmp:
        work = args.work or Path(tmp)
        for case in cases:
            doc = golden.build_and_measure(case, work)
            if not args.compare:
                print(f"wrote {golden.write_golden(doc, args.folder)}")
                continue
            problems = golden.compare(golden.load_golden(case.name, args.folder), doc)
            bad += bool(problems)
            print(f"{case.name}: " + ("ok" if not problems else "REGRESSION"))
            for line in problems:
                print(f"  {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
