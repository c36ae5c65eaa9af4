"""Make ``import hifitrt`` work from a source checkout that is not installed.

The repo root *is* the ``hifitrt`` package (its folders are the subpackages), but the checkout
directory need not be called ``hifitrt``. Until the package is installed, scripts call
``ensure_hifitrt()``, which imports the repo root's ``__init__.py`` under that name, exactly as
an installed package is imported: ``hifitrt.__version__`` is set, relative imports inside the
package (``from .errors import ...``) work unchanged, and subpackages import as usual.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def ensure_hifitrt() -> None:
    """Import nothing if ``hifitrt`` is importable already; otherwise load the repo root as it."""
    if "hifitrt" in sys.modules or importlib.util.find_spec("hifitrt") is not None:
        return
    spec = importlib.util.spec_from_file_location(
        "hifitrt", REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hifitrt"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["hifitrt"]
        raise
