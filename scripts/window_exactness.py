"""Window exactness: is vocoding a window of a mel bit-identical to vocoding the whole mel?

Why it matters: ``serve`` vocodes a streamed answer in windows (a small first window for early
audio, then the rest) and, to keep streamed and whole answers byte-identical, vocodes whole
answers in the same windows, which costs the first window's extra context on every answer. If
an engine's windows were bit-exact with the whole-mel computation, whole answers could be one
window and pay nothing. Each window carries the vocoder's context on each side, so the
difference, if any, is not missing context but arithmetic that depends on the input length.

For every shipped speech fixture and every window length in ``--lengths``: a prefix window
``[0, L)`` (its first ``L - right_context`` output frames compared) and a suffix window (``L``
frames ending at the mel's end, its output after the left context compared), each against the
same samples of the whole mel vocoded at once. Prints, per window length, how many windows
differ at all (float32 bits), how many differ in int16 PCM, and the largest difference.

    python scripts/window_exactness.py ENGINE_DIR [--threads 1,2] [--lengths 24,48,64,65,96,128]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from _bootstrap import ensure_hifitrt

ensure_hifitrt()


def compare(engine, mels: list[np.ndarray], length: int) -> dict:
    """Windows of ``length`` frames against the whole-mel samples they stand for."""
    from hifitrt.serving.audio import pcm_bytes

    hop = engine.spec.hop
    left, right = engine.spec.left_context_frames, 0 if engine.spec.causal else engine.spec.right_context_frames
    windows = bits = pcm = 0
    worst = 0.0
    for mel in mels:
        frames = mel.shape[1]
        if frames < length + left + right:
            continue
        whole = engine(mel)
        starts = ((0, 0, length - right), (frames - length, frames - length + left, frames))  # (window start, kept s, e)
        for start, s, e in starts:
            got = engine(np.ascontiguousarray(mel[:, start:start + length]))[(s - start) * hop:(e - start) * hop]
            want = whole[s * hop:e * hop]
            windows += 1
            bits += not np.array_equal(got, want)
            pcm += pcm_bytes(got) != pcm_bytes(want)
            worst = max(worst, float(np.abs(got - want).max()))
    return {"length": length, "windows": windows, "float_differ": bits, "int16_differ": pcm, "max_abs": worst}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("engine", help="engine directory")
    p.add_argument("--threads", default="1,2", help="intra-op thread counts to try (default 1,2)")
    p.add_argument("--lengths", default="24,32,48,64,65,80,128", help="window lengths in frames")
    args = p.parse_args(argv)

    from hifitrt.export.fixtures import fixture_mels
    from hifitrt.runtime import VocoderEngine

    mels = list(fixture_mels().values())
    print(f"{len(mels)} speech fixtures, {min(m.shape[1] for m in mels)}-{max(m.shape[1] for m in mels)} frames")
    print("| threads | window frames | windows | float32 differs | int16 differs | max abs diff |")
    print("|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        engine = VocoderEngine.load(args.engine, threads=threads)
        for length in (int(n) for n in args.lengths.split(",")):
            r = compare(engine, mels, length)
            print(f"| {threads} | {length} | {r['windows']} | {r['float_differ']} | {r['int16_differ']} | "
                  f"{r['max_abs']:.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
