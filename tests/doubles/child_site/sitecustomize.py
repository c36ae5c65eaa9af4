"""TEST DOUBLE hook for Python child processes of a rehearsal run (not TensorRT, not a GPU).

tests/doubles/run_with_tensorrt_double.py puts this folder on ``PYTHONPATH``, so every Python
process hifitrt starts during that run (the benchmark measures peak memory in a child) sees the
same TensorRT test double and modelled GPU as the parent. Nothing else puts it there.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/
from doubles.run_with_tensorrt_double import install_tensorrt_double  # noqa: E402

install_tensorrt_double()
