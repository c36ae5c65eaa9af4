"""report.html: one self-contained page (inline CSS, base64 PNGs, no external resources).

Rendered from the report.json document itself, so the page can never disagree with the
machine-readable verdict; only the worst case's waveforms are needed in addition, for plots.
Self-contained because reports get attached to CI runs and mailed around: a page that loads
fonts or scripts from the network would break offline or leak where it was opened.
"""
from __future__ import annotations

import base64
import html
import math
from typing import Any, Mapping, Sequence

from .cases import CaseWaveforms

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1d2330;font:14px/1.45 -apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:20px}
h1{font-size:22px;margin:0}
h2{font-size:17px;margin:0 0 10px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px 20px;
margin:0 0 16px}
.banner{display:flex;align-items:center;gap:20px;padding:18px 20px;border-radius:8px;
margin:0 0 16px;color:#fff}
.banner.pass{background:#1e7e34}.banner.fail{background:#b3261e}
.verdict{font-size:34px;font-weight:800;letter-spacing:2px;padding:4px 18px;border:3px solid
rgba(255,255,255,.85);border-radius:6px}
.banner .sub{font-size:14px;opacity:.95}
.banner h1{color:#fff}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:4px 24px}
.kv div{display:flex;gap:8px;border-bottom:1px dotted #e3e6ea;padding:2px 0;min-width:0}
.kv b{font-weight:600;color:#4a5363;white-space:nowrap}
.kv span{overflow-wrap:anywhere;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;width:100%;font-size:12.5px}
table.narrow{width:auto;min-width:640px}
th,td{padding:5px 7px;border-bottom:1px solid #e6e8ec;text-align:right;white-space:nowrap}
th{background:#eef0f4;font-weight:600;position:sticky;top:0}
td.l,th.l{text-align:left}
tbody tr:nth-child(even){background:#fafbfc}
td.bad{background:#fde2e0;color:#8c1d18;font-weight:700}
td.na{color:#98a1ae}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:700;font-size:11.5px}
.tag.pass{background:#d7f0dc;color:#155d27}.tag.fail{background:#fde2e0;color:#8c1d18}
tr.worst td:first-child{box-shadow:inset 4px 0 #b3261e}
td.msg{white-space:normal;text-align:left;color:#8c1d18;min-width:220px}
.scroll{overflow-x:auto}
td.input{max-width:190px;overflow:hidden;text-overflow:ellipsis}
img{display:block;max-width:100%;height:auto;margin:6px 0 12px}
.note{color:#5b6472;font-size:12.5px;margin:4px 0 10px}
footer{color:#7a8392;font-size:12px;text-align:center;padding:6px 0 20px}
"""

# (metrics key, column header, formatter) for the per-shape table.
_COLUMNS: Sequence[tuple[str, str, str]] = (
    ("snr_db", "SNR dB", "snr"),
    ("max_abs_error", "max |err|", "sci"),
    ("mean_abs_error", "mean |err|", "sci"),
    ("log_mel_l1", "log-mel L1", "f4"),
    ("mrstft", "MR-STFT", "f4"),
    ("nonfinite_count", "NaN/Inf", "int"),
    ("length_mismatch", "len &Delta;", "signed"),
    ("pesq", "PESQ", "f2"),
)

_LABELS = {
    "snr_db": "waveform SNR (dB)",
    "max_abs_error": "max abs error",
    "mean_abs_error": "mean abs error",
    "log_mel_l1": "log-mel L1",
    "mrstft": "MR-STFT distance",
    "nonfinite_count": "NaN/Inf samples",
    "length_mismatch": "length mismatch (samples)",
    "pesq": "PESQ",
}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    v = float(value)
    if not math.isfinite(v):
        return "&ndash;"
    if kind == "snr":
        return f"{v:.1f}" if abs(v) < 199.95 else ("&ge;200" if v > 0 else "&le;-200")
    if kind == "sci":
        return "0" if v == 0 else f"{v:.2e}"
    if kind == "f4":
        return f"{v:.4f}"
    if kind == "f2":
        return f"{v:.2f}"
    if kind == "int":
        return f"{int(v)}"
    if kind == "signed":
        return f"{int(v):+d}" if v else "0"
    return _e(value)


def _fmt_threshold(name: str, spec: Any) -> str:
    if not isinstance(spec, Mapping):
        return _e(spec)
    parts = []
    for kind, v in spec.items():
        op = "&ge;" if kind == "min" else "&le;"
        if name in ("nonfinite_count", "length_mismatch"):
            parts.append(f"{op} {int(v)}")
        else:
            parts.append(f"{op} {v:g}")
    return " ".join(parts)


def _kv_grid(items: Mapping[str, Any]) -> str:
    rows = []
    for k, v in items.items():
        if isinstance(v, Mapping):
            v = ", ".join(f"{kk}={vv}" for kk, vv in v.items())
        elif isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        rows.append(f"<div><b>{_e(k)}</b><span>{_e(v)}</span></div>")
    return f'<div class="kv">{"".join(rows)}</div>'


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _cases_table(doc: Mapping[str, Any]) -> str:
    sr = doc.get("sample_rate") or 0
    worst_i = doc["worst"].get("case")
    head = ("<tr><th>#</th><th>verdict</th><th class=l>profile</th><th class=l>input</th><th>batch</th>"
            "<th>frames</th><th>seconds</th>"
            + "".join(f"<th>{h}</th>" for _, h, _ in _COLUMNS)
            + "<th class=l>failures</th></tr>")
    rows = []
    for i, case in enumerate(doc["cases"]):
        m = case["metrics"]
        failed = {f["metric"] for f in case["failures"]}
        secs = m.get("reference_samples", 0) / sr if sr else 0.0
        v = case["verdict"]
        cells = [
            f"<td>{i}</td>",
            f'<td><span class="tag {v}">{v.upper()}</span></td>',
            f"<td class=l>{_e(case['profile'])}</td>",
            f'<td class="l input" title="{_e(case["input"])}">{_e(case["input"])}</td>',
            f"<td>{case['shape']['batch']}</td>",
            f"<td>{case['shape']['frames']}</td>",
            f"<td>{secs:.2f}</td>",
        ]
        for key, _, kind in _COLUMNS:
            val = m.get(key)
            cls = "bad" if key in failed else ("na" if val is None else "")
            note = m.get("pesq_note") if key == "pesq" else None
            title = f' title="{_e(note)}"' if note else ""
            cells.append(f'<td class="{cls}"{title}>{_fmt(val, kind)}</td>')
        msgs = "<br>".join(_e(f["message"]) for f in case["failures"])
        cells.append(f"<td class=msg>{msgs}</td>")
        cls = ' class="worst"' if i == worst_i else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table><thead>{head}</thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _segments_table(segments: Sequence[Mapping[str, Any]]) -> str:
    if not segments:
        return '<p class="note">No window holds any error: the engine output is bit-exact.</p>'
    rows = []
    for k, s in enumerate(segments):
        err_db = "NaN/Inf" if s.get("error_db") is None else f"{s['error_db']:.1f}"
        seg_snr = s.get("segment_snr_db")
        if s.get("nonfinite"):
            seg_snr_txt = "NaN/Inf"
        elif seg_snr is not None and seg_snr <= -199.95:
            seg_snr_txt = "reference silent"
        else:
            seg_snr_txt = _fmt(seg_snr, "snr")
        rows.append(
            f"<tr><td>{k + 1}</td><td>{s['start_s']:.3f}</td><td>{s['end_s']:.3f}</td>"
            f"<td>{err_db}</td><td>{seg_snr_txt}</td>"
            f"<td>{_fmt(s.get('max_abs_error'), 'sci')}</td><td>{s.get('nonfinite', 0)}</td></tr>"
        )
    head = ("<tr><th>rank</th><th>start s</th><th>end s</th>"
            "<th>error energy dB<br><small>re mean ref. window</small></th>"
            "<th>window SNR dB</th><th>max |err|</th><th>NaN/Inf</th></tr>")
    return (f'<table class="narrow"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
            '<p class="note">Non-overlapping 20 ms windows of the worst item, ranked by error '
            "energy (NaN/Inf first). Error energy is relative to the reference's mean energy "
            "per window; window SNR compares the two inside the window.</p>")


def _worst_section(doc: Mapping[str, Any], waveforms: CaseWaveforms | None) -> str:
    worst = doc["worst"]
    if worst.get("case") is None:
        return ""
    case = doc["cases"][worst["case"]]
    m = case["metrics"]
    title = (f"Worst case: #{worst['case']} &middot; {_e(case['profile'])} &middot; "
             f"{_e(case['input'])} &middot; batch {case['shape']['batch']} &times; "
             f"{case['shape']['frames']} frames")
    if case["shape"]["batch"] > 1:
        title += f" &middot; item {worst.get('item', 0)}"
    parts = [f"<section><h2>{title}</h2>"]
    summary = {
        "verdict": case["verdict"].upper(),
        "SNR": f"{_fmt(m.get('snr_db'), 'snr')} dB",
        "max |err|": _fmt(m.get("max_abs_error"), "sci"),
        "log-mel L1": _fmt(m.get("log_mel_l1"), "f4"),
        "MR-STFT": _fmt(m.get("mrstft"), "f4"),
        "PESQ": _fmt(m.get("pesq"), "f2") if m.get("pesq") is not None else
        f"n/a ({m.get('pesq_note') or 'not computed'})",
    }
    parts.append(_kv_grid({k: html.unescape(v) for k, v in summary.items()}))
    if waveforms is None:
        parts.append('<p class="note">Waveforms of this case were not kept, so no plots.</p>')
    else:
        from . import plots

        sr = int(doc["sample_rate"])
        parts.append("<h2 style='margin-top:14px'>Waveforms</h2>")
        parts.append(_img(plots.waveform_png(waveforms.reference, waveforms.candidate, sr),
                          "reference and engine waveforms"))
        parts.append("<h2>Spectrograms</h2>")
        parts.append('<p class="note">Same colour scale in all three panels: the error '
                     "panel's distance below the reference is the SNR per band and time.</p>")
        parts.append(_img(plots.spectrogram_png(waveforms.reference, waveforms.candidate, sr),
                          "spectrograms of reference, engine and error"))
    parts.append("<h2 style='margin-top:14px'>Worst 20 ms segments</h2>")
    parts.append(_segments_table(worst.get("segments", [])))
    parts.append("</section>")
    return "".join(parts)


def render_html(doc: Mapping[str, Any], worst_waveforms: CaseWaveforms | None) -> str:
    """The full page for a report.json document plus the worst case's waveforms (or None)."""
    verdict = doc["verdict"]
    s = doc["summary"]
    w = doc["worst"]["metrics"]
    worst_bits = []
    for key, label, kind, unit in (("snr_db", "worst SNR", "snr", " dB"),
                                   ("log_mel_l1", "worst log-mel L1", "f4", ""),
                                   ("max_abs_error", "worst max |err|", "sci", ""),
                                   ("nonfinite_count", "NaN/Inf samples", "int", "")):
        if key in w and (key != "nonfinite_count" or w[key]["value"]):
            worst_bits.append(f"{label} {_fmt(w[key]['value'], kind)}{unit} "
                              f"(#{w[key]['case']})")
    engine = doc.get("engine") or {}
    name = engine.get("name") or engine.get("source") or "engine"
    sub = (f"{s['cases']} cases &middot; {s['passed']} passed &middot; {s['failed']} failed"
           + (" &middot; " + " &middot; ".join(worst_bits) if worst_bits else ""))
    if not doc["cases"]:
        sub = "no cases were measured, so nothing is proven"

    thresholds = {k: v for k, v in doc["thresholds"].items() if k != "preset"}
    th_items = {_LABELS.get(k, k): html.unescape(_fmt_threshold(k, v))
                for k, v in thresholds.items()}
    th_items = {"preset": doc["thresholds"].get("preset", "custom"), **th_items}

    body = [
        f'<div class="banner {verdict}"><div class="verdict">{verdict.upper()}</div>'
        f"<div><h1>hifitrt parity report &middot; {_e(name)}</h1>"
        f'<div class="sub">{sub}</div></div></div>',
        f"<section><h2>Engine</h2>{_kv_grid(engine) if engine else '<p class=note>no manifest</p>'}"
        f"</section>",
        f"<section><h2>Thresholds</h2>{_kv_grid(th_items)}"
        '<p class="note">Reference: PyTorch FP32. PESQ is wide-band P.862.2 at 16 kHz '
        "(narrow-band at 8 kHz), absent for other rates or clips under 0.25 s.</p></section>",
        f"<section><h2>Per-shape results</h2>{_cases_table(doc)}</section>",
        _worst_section(doc, worst_waveforms),
        f"<footer>{_e(doc['schema'])} v{doc['schema_version']} &middot; created "
        f"{_e(doc['created'])} &middot; sample rate {doc['sample_rate']} Hz</footer>",
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>hifitrt parity report: {verdict.upper()} &middot; {_e(name)}</title>"
        f"<style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )
