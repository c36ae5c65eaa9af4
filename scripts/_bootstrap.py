"""Make ``import hifitrt`` work from a source checkout that is not installed.

The repo root *is* the ``hifitrt`` package (its folders are the subpackages), but the checkout
directory need not be called ``hifitrt``. Until the package is installed, scripts call
``ensure_hifitrt()`` which registers the repo root under that name so relative imports inside
the package (``from .errors import ...``) work unchanged.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def ensure_hifitrt() -> None:
    """Import nothing if ``hifitrt`` is importable already; otherwise alias the repo root."""
    if "hifitrt" in sys.modules or importlib.util.find_spec("hifitrt") is not None:
        return
    pkg = types.ModuleType("hifitrt")
    pkg.__path__ = [str(REPO_ROOT)]  # type: ignore[attr-defined]
    pkg.__file__ = str(REPO_ROOT / "__init__.py")
    sys.modules["hifitrt"] = pkg
