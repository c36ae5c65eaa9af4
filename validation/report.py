"""The parity report: per-shape results -> report.json (versioned schema) and report.html.

Why a versioned JSON: CI jobs and the engine cache read the verdict and worst-case numbers
back, so the layout is a contract (docs/report-schema.md), bumped only on breaking changes.
The HTML is for people and lives in :mod:`hifitrt.validation.html_report` (figures in
``plots``).

Memory stays bounded on long sweeps: a ``CaseCollector`` keeps the waveforms of only the
``keep`` worst cases; every other case keeps just its numbers.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..atomic import write_bytes
from ..jsonfile import write_json
from ..engines import layout
from ..export.mel_config import MelConfig
from .cases import CaseCollector, CaseResult, CaseWaveforms, ReportPaths, worst_case_index
from .html_report import render_html
from .metrics import (
    Thresholds,
    as_items,
    compare_audio,
    evaluate,
    worst_segments,
)

log = logging.getLogger(__name__)

SCHEMA = "hifitrt.parity-report"
SCHEMA_VERSION = 1
JSON_NAME = layout.REPORT_JSON
HTML_NAME = layout.REPORT_HTML

# Metrics summarised in "worst" and shown in the HTML table: name -> True if lower is worse.
WORST_METRICS: dict[str, bool] = {
    "snr_db": True,
    "max_abs_error": False,
    "mean_abs_error": False,
    "log_mel_l1": False,
    "mrstft": False,
    "nonfinite_count": False,
    "pesq": True,
}


def measure_case(
    reference: Any,
    candidate: Any,
    *,
    sample_rate: int,
    thresholds: Thresholds,
    profile: str,
    input_name: str,
    frames: int,
    mel_cfg: MelConfig | None = None,
    keep_waveforms: bool = True,
    with_pesq: bool = True,
) -> CaseResult:
    """Compare, evaluate and (optionally) keep the worst item's waveforms for plotting."""
    metrics = compare_audio(reference, candidate, sample_rate, mel_cfg=mel_cfg,
                            with_pesq=with_pesq)
    ref = as_items(reference, "reference")
    wf = None
    if keep_waveforms:
        cand = as_items(candidate, "candidate")
        i = min(metrics.worst_item, cand.shape[0] - 1)
        wf = CaseWaveforms(ref[i].astype(np.float32), cand[i].astype(np.float32), item=i)
    return CaseResult(
        profile=profile,
        input=input_name,
        batch=int(ref.shape[0]),
        frames=int(frames),
        metrics=metrics,
        failures=evaluate(metrics, thresholds),
        waveforms=wf,
    )


def _worst_metrics(cases: Sequence[CaseResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, lower_is_worse in WORST_METRICS.items():
        best_i, best_v = None, None
        for i, c in enumerate(cases):
            v = getattr(c.metrics, name)
            if v is None:
                continue
            v = int(v) if isinstance(v, (int, np.integer)) else float(v)
            if math.isnan(v):  # non-computable is the worst possible value
                best_i, best_v = i, v
                break
            if best_v is None or (v < best_v if lower_is_worse else v > best_v):
                best_i, best_v = i, v
        if best_i is not None:
            out[name] = {"value": best_v if best_v is not None and math.isfinite(best_v) else None,
                         "case": best_i}
    return out


def build_report(
    cases: Sequence[CaseResult],
    *,
    engine: Mapping[str, Any],
    thresholds: Thresholds,
    sample_rate: int,
    created: str | None = None,
    segments_top: int = 10,
) -> dict[str, Any]:
    """The report.json document (see docs/report-schema.md). A report with no cases fails."""
    worst_i = worst_case_index(cases)
    worst: dict[str, Any] = {"case": worst_i, "metrics": _worst_metrics(cases), "segments": []}
    if worst_i is not None:
        wc = cases[worst_i]
        worst.update(profile=wc.profile, input=wc.input, item=wc.metrics.worst_item)
        if wc.waveforms is not None:
            worst["item"] = wc.waveforms.item
            worst["segments"] = [
                s.to_dict() for s in worst_segments(
                    wc.waveforms.reference, wc.waveforms.candidate, sample_rate, top=segments_top)
            ]
    n_failed = sum(1 for c in cases if not c.passed)
    verdict = "pass" if cases and n_failed == 0 else "fail"
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "verdict": verdict,
        "summary": {"cases": len(cases), "failed": n_failed, "passed": len(cases) - n_failed},
        "sample_rate": int(sample_rate),
        "engine": _jsonable(dict(engine)),
        "thresholds": thresholds.to_dict(),
        "cases": [c.to_dict() for c in cases],
        "worst": worst,
        "created": created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _jsonable(obj: Any) -> Any:
    """Make a manifest summary JSON-safe (paths, numpy scalars, tuples, non-finite floats)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return str(obj)


# Required keys and their JSON types, the machine-checkable half of docs/report-schema.md.
_TOP_KEYS = {
    "schema": str, "schema_version": int, "verdict": str, "summary": dict, "sample_rate": int,
    "engine": dict, "thresholds": dict, "cases": list, "worst": dict, "created": str,
}
_CASE_KEYS = {"shape": dict, "profile": str, "input": str, "verdict": str, "metrics": dict,
              "failures": list}
_METRIC_KEYS = ("snr_db", "max_abs_error", "mean_abs_error", "log_mel_l1", "stft_sc",
                "stft_logmag", "mrstft", "nan_count", "inf_count", "nonfinite_count",
                "reference_samples", "candidate_samples", "length_mismatch", "batch_mismatch",
                "pesq", "pesq_note")
_FAILURE_KEYS = ("metric", "value", "limit", "kind", "message")


def check_report(doc: Mapping[str, Any]) -> list[str]:
    """Problems with ``doc`` against schema version 1 (empty list = valid)."""
    problems: list[str] = []

    def need(obj: Mapping[str, Any], keys: Mapping[str, type] | Iterable[str], where: str) -> None:
        for k in keys:
            if k not in obj:
                problems.append(f"{where}: missing key {k!r}")
            elif isinstance(keys, Mapping) and not isinstance(obj[k], keys[k]):
                problems.append(f"{where}.{k}: expected {keys[k].__name__}, got "
                                f"{type(obj[k]).__name__}")

    need(doc, _TOP_KEYS, "report")
    if problems:
        return problems
    if doc["schema"] != SCHEMA:
        problems.append(f"report.schema is {doc['schema']!r}, expected {SCHEMA!r}")
    if doc["schema_version"] != SCHEMA_VERSION:
        problems.append(f"report.schema_version is {doc['schema_version']}, expected "
                        f"{SCHEMA_VERSION}")
    if doc["verdict"] not in ("pass", "fail"):
        problems.append(f"report.verdict is {doc['verdict']!r}, expected 'pass' or 'fail'")
    for i, case in enumerate(doc["cases"]):
        where = f"cases[{i}]"
        need(case, _CASE_KEYS, where)
        if "shape" in case:
            need(case["shape"], {"batch": int, "frames": int}, f"{where}.shape")
        if "metrics" in case:
            need(case["metrics"], _METRIC_KEYS, f"{where}.metrics")
        for j, f in enumerate(case.get("failures", [])):
            need(f, _FAILURE_KEYS, f"{where}.failures[{j}]")
        if case.get("verdict") != ("fail" if case.get("failures") else "pass"):
            problems.append(f"{where}.verdict does not match its failures")
    need(doc["worst"], ("case", "metrics", "segments"), "worst")
    failed = any(c.get("verdict") == "fail" for c in doc["cases"])
    expected = "fail" if failed or not doc["cases"] else "pass"
    if doc["verdict"] != expected:
        problems.append(f"report.verdict is {doc['verdict']!r} but the cases say {expected!r}")
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError as exc:
        problems.append(f"report is not strict JSON: {exc}")
    return problems


def write_report(
    report_dir: str | os.PathLike[str],
    cases: Sequence[CaseResult],
    *,
    engine: Mapping[str, Any],
    thresholds: Thresholds,
    sample_rate: int,
    html: bool = True,
    created: str | None = None,
) -> ReportPaths:
    """Write report.json (and report.html) into ``report_dir``; returns the paths.

    Each file is replaced atomically; the HTML is written first so a report.json present on
    disk always has its matching HTML next to it.
    """
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = build_report(cases, engine=engine, thresholds=thresholds, sample_rate=sample_rate,
                       created=created)
    problems = check_report(doc)
    if problems:  # a bug here, never user input: refuse to write an invalid contract
        raise RuntimeError("parity report violates its schema: " + "; ".join(problems))
    html_path = None
    if html:
        worst_i = doc["worst"]["case"]
        wf = cases[worst_i].waveforms if worst_i is not None else None
        html_path = out / HTML_NAME
        write_bytes(html_path, render_html(doc, wf).encode("utf-8"))
    json_path = out / JSON_NAME
    write_json(json_path, doc, schema=SCHEMA, version=SCHEMA_VERSION)
    log.info("parity report: %s (%s, %d cases)", json_path, doc["verdict"], len(cases))
    return ReportPaths(json=json_path, html=html_path)


__all__ = [
    "CaseCollector",
    "CaseResult",
    "CaseWaveforms",
    "HTML_NAME",
    "JSON_NAME",
    "ReportPaths",
    "SCHEMA",
    "SCHEMA_VERSION",
    "build_report",
    "check_report",
    "measure_case",
    "worst_case_index",
    "write_report",
]
