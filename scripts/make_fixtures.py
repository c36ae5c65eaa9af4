#!/usr/bin/env python3
"""Generate the Mandarin speech fixtures and their mels for the default vocoder.

Why synthetic speech: the repo must ship its own test audio (no dataset download, no license
question), and parity/quality checks need real speech structure (voicing, tones, pauses,
silence), not noise. espeak-ng's Mandarin voice gives that, deterministically.

Voice: ``cmn-latn-pinyin``. (espeak-ng 1.51's plain ``cmn``/``zh`` voice turns Chinese
characters into pinyin and then reads the pinyin with English rules; ``cmn-latn-pinyin``
reads the same characters as Mandarin syllables with tones.) One utterance uses the female
variant ``+f3`` for a higher pitch range.

Pipeline per utterance: espeak-ng (22.05 kHz) -> sox ``rate -v`` to 16 kHz mono float, no
dither -> peak normalised to PEAK -> truncated to whole hops (so the vocoder output of the mel
has exactly the wav's length) -> int16 ``speech/<name>.wav``; the mel of that int16 signal with
``DEFAULT_VOCODER_MEL`` -> ``mels/<name>.npy`` [80, T] float32; ``fixtures.json`` records text,
durations, frames and sha256 of both files.

Usage: scripts/make_fixtures.py [--out data] [--max-bytes 2000000]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.io import wavfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bootstrap import REPO_ROOT, ensure_hifitrt  # noqa: E402

ensure_hifitrt()
from hifitrt.atomic import write_bytes  # noqa: E402
from hifitrt.export.mel import DEFAULT_VOCODER_MEL, wav_to_mel  # noqa: E402

logger = logging.getLogger("make_fixtures")

VOICE = "cmn-latn-pinyin"
PEAK = 0.9  # -0.9 dBFS: loud like normalised TTS training data, with headroom
SAMPLE_RATE = 16000

# (name, voice variant suffix, text); durations measured with espeak-ng 1.51 at default speed.
UTTERANCES = [
    ("cmn_hao", "", "好。"),  # ~0.6 s
    ("cmn_tianqi", "", "今天天气很好。"),  # ~2.2 s
    ("cmn_jidian_f", "+f3", "请问现在几点了？"),  # ~2.2 s, female variant
    ("cmn_huanying", "", "欢迎使用语音合成系统，祝您愉快。"),  # ~4.2 s
    ("cmn_beijing", "", "北京是中华人民共和国的首都，也是全国的政治和文化中心。"),  # ~7.3 s
    (
        "cmn_chuntian",
        "",
        "春天来了，公园里的花都开了，小朋友们在草地上放风筝。"
        "爷爷奶奶坐在长椅上聊天，大家都很开心。",
    ),  # ~11.1 s
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tool_version(cmd: list) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def synthesize(text: str, voice: str, workdir: Path) -> np.ndarray:
    """espeak-ng -> 16 kHz mono float32 (not yet normalised)."""
    raw = workdir / "espeak.wav"
    res = workdir / "16k.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "175", "-p", "50", "-a", "100", "-w", str(raw), text],
        check=True,
    )
    subprocess.run(
        ["sox", "-D", "-V1", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "32",
         "-e", "floating-point", str(res), "rate", "-v"],
        check=True,
    )
    sr, data = wavfile.read(res)
    if sr != SAMPLE_RATE:
        raise RuntimeError(f"sox produced {sr} Hz, expected {SAMPLE_RATE}")
    return np.asarray(data, dtype=np.float32).reshape(-1)


def to_int16(x: np.ndarray, hop: int) -> np.ndarray:
    x = x[: (len(x) // hop) * hop]
    x = x * (PEAK / float(np.max(np.abs(x))))
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "data")
    ap.add_argument("--max-bytes", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found; install it (apt-get install {tool})", file=sys.stderr)
            return 2

    cfg = DEFAULT_VOCODER_MEL
    hop = cfg.hop_length
    out: Path = args.out
    entries = []
    with tempfile.TemporaryDirectory() as td:
        for name, variant, text in UTTERANCES:
            wav = to_int16(synthesize(text, VOICE + variant, Path(td)), hop)
            wav_path = out / "speech" / f"{name}.wav"
            mel_path = out / "mels" / f"{name}.npy"
            tmp_wav = Path(td) / "out.wav"
            wavfile.write(tmp_wav, SAMPLE_RATE, wav)
            write_bytes(wav_path, tmp_wav.read_bytes())
            mel = wav_to_mel(wav.astype(np.float32) / 32768.0, cfg)
            assert mel.shape == (cfg.n_mels, len(wav) // hop)
            tmp_npy = Path(td) / "out.npy"
            np.save(tmp_npy, mel.astype(np.float32))
            write_bytes(mel_path, tmp_npy.read_bytes())
            entries.append({
                "name": name,
                "text": text,
                "voice": VOICE + variant,
                "duration_s": round(len(wav) / SAMPLE_RATE, 4),
                "samples": int(len(wav)),
                "frames": int(mel.shape[1]),
                "wav": f"speech/{name}.wav",
                "mel": f"mels/{name}.npy",
                "wav_sha256": _sha256(wav_path),
                "mel_sha256": _sha256(mel_path),
            })
            logger.info("%-14s %6.2f s %5d frames  %s", name, len(wav) / SAMPLE_RATE,
                        mel.shape[1], text)

    entries.sort(key=lambda e: e["samples"])
    meta = {
        "sample_rate": SAMPLE_RATE,
        "peak": PEAK,
        "mel_config": cfg.to_dict(),
        "generator": "scripts/make_fixtures.py",
        "tools": {"espeak-ng": _tool_version(["espeak-ng", "--version"]),
                  "sox": _tool_version(["sox", "--version"])},
        "fixtures": entries,
    }
    write_bytes(out / "fixtures.json",
                        (json.dumps(meta, ensure_ascii=False, indent=2) + "\n").encode("utf-8"))

    total = sum((out / e["wav"]).stat().st_size + (out / e["mel"]).stat().st_size
                for e in entries) + (out / "fixtures.json").stat().st_size
    logger.info("total %d bytes in %d fixtures (%.2f s of speech)", total, len(entries),
                sum(e["duration_s"] for e in entries))
    if total > args.max_bytes:
        print(f"error: fixtures take {total} bytes > --max-bytes {args.max_bytes}; "
              "shorten the texts", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
