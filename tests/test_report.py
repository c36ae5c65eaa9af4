"""Parity report: report.json follows the documented schema, report.html is self-contained."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from hifitrt.validation.metrics import Thresholds
from hifitrt.validation.report import (
    SCHEMA,
    SCHEMA_VERSION,
    CaseCollector,
    build_report,
    check_report,
    measure_case,
    write_report,
)
from hifitrt.validation.synthetic_audio import engine_like, speech_like

SR = 16000
HOP = 160
DOCS = Path(__file__).resolve().parent.parent / "docs" / "report-schema.md"
ENGINE = {"name": "unit-test engine", "backend": "onnxruntime", "precision": "fp16",
          "path": Path("/tmp/x"), "profiles": {"min": 32, "max": 200}}
CLICK_AT_S = 0.6


def _case(profile: str, name: str, frames: int, snr: float, *, batch: int = 1, seed: int = 0,
          click: bool = False, keep: bool = True):
    n = frames * HOP
    ref = np.stack([speech_like(SR, n / SR, seed=seed + b) for b in range(batch)])[:, None, :]
    cand = np.stack([engine_like(ref[b, 0], snr, seed=seed + b) for b in range(batch)])[:, None]
    if click:
        at = int(CLICK_AT_S * SR)
        cand[0, 0, at:at + 48] += 0.4
    return measure_case(ref, cand, sample_rate=SR, thresholds=Thresholds.fp16(), profile=profile,
                        input_name=name, frames=frames, with_pesq=False, keep_waveforms=keep)


@pytest.fixture(scope="module")
def failing_cases():
    collector = CaseCollector(keep=1)
    collector.add(_case("min", "clip_a", 32, 52.0, seed=1))
    collector.add(_case("opt", "clip_b", 100, 47.0, batch=2, seed=2))
    collector.add(_case("max", "clip_c", 150, 46.0, seed=3, click=True))
    collector.add(_case("odd", "clip_d", 77, 45.0, seed=4))
    return collector.cases


def test_collector_keeps_waveforms_of_the_worst_case_only(failing_cases):
    kept = [c for c in failing_cases if c.waveforms is not None]
    assert len(kept) == 1 and kept[0].input == "clip_c" and not kept[0].passed
    assert kept[0].waveforms.reference.ndim == 1
    assert kept[0].waveforms.reference.dtype == np.float32


def test_report_json_follows_the_schema(tmp_path, failing_cases):
    paths = write_report(tmp_path / "report", failing_cases, engine=ENGINE,
                         thresholds=Thresholds.fp16(), sample_rate=SR)
    doc = json.loads(paths.json.read_text())
    assert check_report(doc) == []
    assert doc["schema"] == SCHEMA == "hifitrt.parity-report" and doc["schema_version"] == 1
    assert doc["verdict"] == "fail"
    assert doc["summary"] == {"cases": 4, "failed": 1, "passed": 3}
    assert [c["input"] for c in doc["cases"]] == ["clip_a", "clip_b", "clip_c", "clip_d"]
    assert doc["cases"][1]["shape"] == {"batch": 2, "frames": 100}
    assert len(doc["cases"][1]["metrics"]["items"]) == 2
    bad = doc["cases"][2]
    assert bad["verdict"] == "fail"
    assert {f["metric"] for f in bad["failures"]} >= {"snr_db"}
    assert all(set(f) == {"metric", "value", "limit", "kind", "message"} for f in bad["failures"])
    assert doc["thresholds"]["snr_db"] == {"min": 40.0}
    assert doc["engine"]["path"] == "/tmp/x"  # non-JSON values stringified
    worst = doc["worst"]
    assert worst["case"] == 2 and worst["input"] == "clip_c"
    assert worst["metrics"]["snr_db"]["case"] == 2
    top = worst["segments"][0]
    assert top["start_s"] <= CLICK_AT_S < top["end_s"] + 0.003
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", doc["created"])


def test_every_schema_key_is_documented(failing_cases):
    doc = build_report(failing_cases, engine=ENGINE, thresholds=Thresholds.fp16(),
                       sample_rate=SR)
    text = DOCS.read_text()
    keys = set(doc) | set(doc["cases"][0]) | set(doc["cases"][0]["metrics"]) | set(doc["worst"])
    keys |= set(doc["cases"][2]["failures"][0]) | set(doc["worst"]["segments"][0])
    keys |= set(doc["cases"][1]["metrics"])  # batch case adds "items"
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"docs/report-schema.md does not document: {missing}"
    assert text.startswith(f"# Parity report schema (`report.json`), version {SCHEMA_VERSION}")


def test_passing_and_empty_reports(tmp_path):
    cases = [_case("opt", "clip_ok", 64, 50.0, seed=7)]
    doc = build_report(cases, engine={}, thresholds=Thresholds.fp16(), sample_rate=SR)
    assert doc["verdict"] == "pass" and check_report(doc) == []
    empty = build_report([], engine={}, thresholds=Thresholds.fp16(), sample_rate=SR)
    assert empty["verdict"] == "fail" and empty["worst"]["case"] is None
    assert check_report(empty) == []
    paths = write_report(tmp_path, [], engine={}, thresholds=Thresholds.fp16(), sample_rate=SR)
    assert "no cases" in paths.html.read_text()


def test_check_report_rejects_broken_documents(failing_cases):
    doc = build_report(failing_cases, engine=ENGINE, thresholds=Thresholds.fp16(),
                       sample_rate=SR)
    lying = dict(doc, verdict="pass")
    assert any("verdict" in p for p in check_report(lying))
    no_cases = {k: v for k, v in doc.items() if k != "cases"}
    assert check_report(no_cases) == ["report: missing key 'cases'"]
    case = dict(doc["cases"][0])
    del case["metrics"]
    assert any("metrics" in p for p in check_report(dict(doc, cases=[case])))


def test_report_html_is_self_contained_and_complete(tmp_path, failing_cases):
    paths = write_report(tmp_path, failing_cases, engine=ENGINE, thresholds=Thresholds.fp16(),
                         sample_rate=SR)
    page = paths.html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    for attr in re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', page):
        assert attr.startswith("data:"), f"external resource: {attr[:60]}"
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert 'class="banner fail"' in page and ">FAIL<" in page
    for name in ("clip_a", "clip_b", "clip_c", "clip_d"):
        assert name in page
    assert page.count("<tr") >= 1 + 4  # header + every case
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # waveform overlay + spectrograms of the worst case
    for img in images:
        assert base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Worst 20 ms segments" in page and f"{CLICK_AT_S:.2f}" in page


def test_write_is_atomic_and_overwrites(tmp_path):
    cases = [_case("opt", "clip_ok", 40, 50.0, seed=9, keep=False)]
    for _ in range(2):
        paths = write_report(tmp_path, cases, engine={"name": "x"},
                             thresholds=Thresholds.fp16(), sample_rate=SR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]
    assert json.loads(paths.json.read_text())["verdict"] == "pass"
    assert (paths.json.stat().st_mode & 0o777) == 0o644
    assert "were not kept" in paths.html.read_text()
