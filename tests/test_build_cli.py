"""`tts-build-engine build`: the whole chain from the command line, then reuse."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hifitrt.cli import main as cli_main
from hifitrt.validation.golden import tiny_kantts_checkpoint

PROFILES = ["--profile", "s=dynamic:1-2x8-12-16", "--profile", "l=dynamic:1-2x17-20-24"]


@pytest.mark.slow
def test_build_cli_builds_reports_then_reuses(tmp_path: Path, capsys) -> None:
    source = tiny_kantts_checkpoint(tmp_path / "src")
    out = tmp_path / "engine"
    argv = ["build", str(source), "--out", str(out), "--backend", "onnxruntime", *PROFILES]

    assert cli_main(argv) == 0
    first = capsys.readouterr().out
    assert "[1/5]" in first and "[5/5]" in first and "built:" in first
    assert "ONNX Runtime" in first or "onnxruntime" in first
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["verdict"] == "pass" and len(report["cases"]) >= 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quick_parity"]["nonfinite_count"] == 0
    assert manifest["quick_parity"]["worst_snr_db"] > 40

    assert cli_main(argv) == 0
    second = capsys.readouterr().out
    assert "reused" in second and "[2/5]" not in second
    assert str(out / "report" / "report.html") in second


def test_build_cli_bad_profile_is_one_line(tmp_path: Path, capsys) -> None:
    source = tiny_kantts_checkpoint(tmp_path / "src")
    code = cli_main(["build", str(source), "--out", str(tmp_path / "e"), "--backend", "onnxruntime",
                     "--profile", "dynamic:1-2x64-32-16"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "e" / "manifest.json").exists()
