"""``tts-build-engine inspect ENGINE_DIR``: the manifest in words, after verifying every file."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import EngineError
from .backends import backend_for
from .manifest import Manifest, verify_engine_dir


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _why_rows(backend: dict) -> list[tuple[str, str]]:
    """Why this backend and precision: `--backend auto`'s measured choice among CPU backends
    (one row per candidate) and the BF16 plan's verdict, when the build recorded them."""
    rows = []
    selection = backend.get("selection")
    if isinstance(selection, dict) and selection.get("reason"):
        rows.append(("chosen by", str(selection["reason"])))
        for row in selection.get("candidates") or ():
            verdict = "passed parity" if row.get("passed") else "failed parity"
            rows.append((f"  {row.get('candidate')}",
                         f"median {row.get('median_s')} s, {row.get('x_real_time')}x real time, "
                         f"SNR {row.get('snr_db')} dB, {verdict}"))
    if backend.get("precision_reason"):
        rows.append(("precision why", str(backend["precision_reason"])))
    return rows


def describe_manifest(manifest: Manifest) -> list[tuple[str, str]]:
    """(label, value) rows summarising a manifest."""
    spec = manifest.spec
    backend = manifest.backend
    backend_text = f"{backend.get('name')} {backend.get('version', '')}".strip()
    if backend.get("providers"):
        backend_text += f" ({', '.join(backend['providers'])})"
    device = manifest.device_info
    bound = backend_for(manifest.backend_name).machine_bound
    rows = [
        ("source", str(manifest.source.get("location")) + (f" voice {manifest.source['voice']}"
                                                           if manifest.source.get("voice") else "")),
        ("vocoder", f"{spec.arch} {spec.sample_rate} Hz, hop {spec.hop}, {spec.in_channels} input channels"),
        ("source digest", spec.digest),
        ("backend", backend_text),
        ("built for", device.describe() if device else "no GPU recorded" if bound
         else "any machine (no GPU-specific code)"),
        ("precision", manifest.precision),
        ("engine file", manifest.engine_file),
        *_why_rows(backend),
        ("created", f"{manifest.created} by hifitrt {manifest.hifitrt_version} in {manifest.build_seconds:.1f} s"),
    ]
    for p in manifest.profiles:
        rows.append((f"profile {p.name}",
                     f"batch {p.batch_min}-{p.batch_opt}-{p.batch_max}, "
                     f"frames {p.frames_min}-{p.frames_opt}-{p.frames_max}"))
    options = {k: v for k, v in (manifest.options or {}).items() if v not in (None, False, [], ())}
    if options:
        rows.append(("options", ", ".join(f"{k}={v}" for k, v in sorted(options.items()))))
    if manifest.quick_parity:
        qp = manifest.quick_parity
        verdict = qp.get("passed")
        head = "passed" if verdict is True else "FAILED" if verdict is False else "recorded"
        rest = ", ".join(f"{k}={v}" for k, v in sorted(qp.items()) if k != "passed" and not isinstance(v, (dict, list)))
        rows.append(("quick parity", head + (f" ({rest})" if rest else "")))
    else:
        rows.append(("quick parity", "not run"))
    for rel, entry in sorted(manifest.artifacts.items()):
        rows.append((f"  {rel}", f"{_size(int(entry['bytes']))}  sha256 {str(entry['sha256'])[:16]}…"))
    return rows


def inspect_engine_dir(engine_dir: str | os.PathLike[str]) -> str:
    """Verify ``engine_dir`` (hashes; no deserialisation) and describe it; EngineError if damaged.

    Compatibility with this machine is reported, not enforced: inspecting a TensorRT engine
    built for another GPU is a normal thing to do.
    """
    root = Path(engine_dir)
    manifest = verify_engine_dir(root, for_this_machine=False)
    compat = "yes"
    if backend_for(manifest.backend_name).machine_bound:
        try:
            verify_engine_dir(root, for_this_machine=True)
        except EngineError as exc:
            compat = f"no: {exc}"
    rows = describe_manifest(manifest)
    rows.insert(0, ("engine directory", str(root)))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"{'runs here':<{width}}  {compat}")
    lines.append(f"all {len(manifest.artifacts)} artifacts verified (sha256 and size)")
    return "\n".join(lines)
