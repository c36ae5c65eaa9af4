"""Figures for the HTML parity report, returned as PNG bytes (matplotlib, Agg canvas).

Kept apart from the JSON report so report.json can be written (and tested) without
matplotlib, and so plotting choices can change without touching the versioned schema.
Figures are built with ``matplotlib.figure.Figure`` on an explicit Agg canvas instead of
pyplot: no global backend switch, no figure registry to leak, safe to call from a library.
"""
from __future__ import annotations

import io
import math

import numpy as np

# 100 dpi and ~11.6 in wide -> images exactly as wide as the report's content column (1160 px).
_DPI = 100
_WIDTH_IN = 11.6
_REF_COLOR = "#1f5fa8"
_ENG_COLOR = "#f08c1a"
_ERR_COLOR = "#c62828"


def _new_figure(height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH_IN, height_in), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _finite(x: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def zoom_window(reference: np.ndarray, candidate: np.ndarray, sample_rate: int,
                half_width_s: float = 0.015) -> tuple[int, int, int]:
    """(start, stop, centre) sample indices of a window around the largest error.

    Non-finite candidate samples count as the largest error so a NaN burst is what you see.
    """
    n = min(len(reference), len(candidate))
    cand = np.asarray(candidate[:n], dtype=np.float64)
    err = np.abs(np.asarray(reference[:n], dtype=np.float64) - cand)
    err[~np.isfinite(cand)] = np.inf
    centre = int(np.argmax(err)) if n else 0
    half = max(1, int(half_width_s * sample_rate))
    start = max(0, centre - half)
    stop = min(max(len(reference), len(candidate)), centre + half)
    return start, stop, centre


def waveform_png(reference: np.ndarray, candidate: np.ndarray, sample_rate: int) -> bytes:
    """Reference vs engine overlay (whole clip, error trace) plus a zoom around the worst error."""
    ref = np.asarray(reference, dtype=np.float64)
    cand_raw = np.asarray(candidate, dtype=np.float64)
    cand = _finite(cand_raw)
    n = max(len(ref), len(cand))
    ref_p = np.pad(ref, (0, n - len(ref)))
    cand_p = np.pad(cand, (0, n - len(cand)))
    err = ref_p - cand_p
    t = np.arange(n) / sample_rate
    start, stop, centre = zoom_window(ref, cand_raw, sample_rate)

    fig = _new_figure(5.4)
    gs = fig.add_gridspec(2, 1, height_ratios=[1, 1], hspace=0.55,
                          left=0.065, right=0.925, top=0.9, bottom=0.1)

    ax = fig.add_subplot(gs[0])
    ax.plot(t[: len(ref)], ref, color=_REF_COLOR, lw=0.6, label="reference")
    ax.plot(t[: len(cand)], cand, color=_ENG_COLOR, lw=0.6, alpha=0.75, label="engine")
    ax.plot(t, err, color=_ERR_COLOR, lw=0.6, label="error")
    bad = np.flatnonzero(~np.isfinite(cand_raw))
    for k, i in enumerate(bad[:50]):  # full-height markers that do not stretch the y-axis
        ax.axvline(i / sample_rate, color=_ERR_COLOR, lw=1.2, label="NaN/Inf" if k == 0 else None)
    if len(cand) != len(ref):
        ax.axvline(min(len(cand), len(ref)) / sample_rate, color="k", ls="--", lw=1,
                   label="end of shorter signal")
    ax.axvspan(start / sample_rate, stop / sample_rate, color="#888", alpha=0.18, lw=0)
    ax.set_xlim(0, max(t[-1] if n else 1.0, 1e-3))
    ax.set_title("Whole clip (grey band: zoomed below)", fontsize=10, loc="left", pad=8)
    ax.set_xlabel("time [s]", fontsize=9)
    ax.set_ylabel("amplitude", fontsize=9)
    ax.tick_params(labelsize=8)
    # Legends sit above the axes, right of the title, so they never cover the waveform.
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=5, frameon=False,
              borderaxespad=0.2)
    ax.grid(alpha=0.25)

    az = fig.add_subplot(gs[1])
    sl = slice(start, stop)
    tz = t[sl] * 1000.0
    az.plot(tz, ref_p[sl], color=_REF_COLOR, lw=1.2, label="reference")
    az.plot(tz, cand_p[sl], color=_ENG_COLOR, lw=1.0, ls="--", label="engine")
    az.axvline(centre / sample_rate * 1000.0, color=_ERR_COLOR, lw=0.8, ls=":")
    az.set_xlabel("time [ms]", fontsize=9)
    az.set_ylabel("amplitude", fontsize=9)
    az.tick_params(labelsize=8)
    az.grid(alpha=0.25)
    ae = az.twinx()
    ae.plot(tz, err[sl], color=_ERR_COLOR, lw=0.9, label="error (right axis)")
    peak = float(np.max(np.abs(err[sl]))) if stop > start else 0.0
    lim = peak * 1.15 if peak > 0 else 1e-6
    ae.set_ylim(-lim, lim)
    ae.tick_params(labelsize=8, colors=_ERR_COLOR)
    ae.set_ylabel("error", fontsize=9, color=_ERR_COLOR)
    h1, l1 = az.get_legend_handles_labels()
    h2, l2 = ae.get_legend_handles_labels()
    az.legend(h1 + h2, l1 + l2, loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8,
              ncol=3, frameon=False, borderaxespad=0.2)
    what = "NaN/Inf" if bad.size and not np.isfinite(cand_raw[min(centre, len(cand_raw) - 1)]) \
        else f"|error| = {abs(err[centre]) if n else 0:.3g}"
    az.set_title(f"Zoom around the largest error at {centre / sample_rate:.3f} s ({what})",
                 fontsize=10, loc="left", pad=8)
    return _png(fig)


def _stft_db(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Magnitude STFT in dB re full scale, [bins, frames], Hann window, zero-padded edges."""
    x = np.pad(x, (n_fft // 2, n_fft // 2))
    frames = max(1, 1 + (len(x) - n_fft) // hop)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    idx = np.minimum(idx, len(x) - 1)
    win = np.hanning(n_fft + 1)[:-1]
    spec = np.fft.rfft(x[idx] * win, axis=1)
    mag = np.abs(spec) / (win.sum() / 2.0)
    return (20.0 * np.log10(np.maximum(mag, 1e-10))).T


def spectrogram_png(reference: np.ndarray, candidate: np.ndarray, sample_rate: int,
                    dynamic_range_db: float = 100.0) -> bytes:
    """Spectrograms of the reference, the engine and the error signal on one dB scale.

    The error panel is the spectrogram of (reference - engine), so its distance below the
    reference panel's colours reads directly as the per-band SNR.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = _finite(candidate)
    n = max(len(ref), len(cand))
    ref = np.pad(ref, (0, n - len(ref)))
    cand = np.pad(cand, (0, n - len(cand)))
    n_fft = 1 << max(8, int(round(math.log2(sample_rate * 0.032))))  # ~32 ms
    hop = max(1, n_fft // 4)
    panels = [
        ("Reference (PyTorch FP32)", _stft_db(ref, n_fft, hop)),
        ("Engine", _stft_db(cand, n_fft, hop)),
        ("Error: reference - engine", _stft_db(ref - cand, n_fft, hop)),
    ]
    vmax = float(np.ceil(panels[0][1].max() / 10.0) * 10.0) if n else 0.0
    vmin = vmax - dynamic_range_db
    dur = n / sample_rate if n else 1.0
    extent = (0.0, dur, 0.0, sample_rate / 2000.0)

    fig = _new_figure(7.2)
    gs = fig.add_gridspec(3, 2, width_ratios=[60, 1], hspace=0.5, wspace=0.02,
                          left=0.065, right=0.94, top=0.95, bottom=0.07)
    im = None
    for row, (title, db) in enumerate(panels):
        ax = fig.add_subplot(gs[row, 0])
        im = ax.imshow(db, origin="lower", aspect="auto", extent=extent, cmap="magma",
                       vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel("kHz", fontsize=9)
        ax.tick_params(labelsize=8)
        if row == len(panels) - 1:
            ax.set_xlabel("time [s]", fontsize=9)
    cax = fig.add_subplot(gs[:, 1])
    cb = fig.colorbar(im, cax=cax)
    cb.set_label("dB re full scale", fontsize=9)
    cb.ax.tick_params(labelsize=8)
    return _png(fig)
