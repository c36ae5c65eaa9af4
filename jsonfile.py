"""Versioned JSON files: written atomically with their schema first, read back with one check.

Every JSON file hifitrt writes for another program or a later run (the engine manifest, the ONNX
Runtime session file, the precision plan, the parity report, bench results, golden baselines)
carries ``"schema"`` and ``"schema_version"`` as its first keys, so a reader can refuse a file
of another kind or version with one clear line instead of failing on a missing key later.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .atomic import write_text
from .errors import HifitrtError


def dumps(doc: Mapping[str, Any], *, schema: str, version: int, indent: int | None = 2, strict: bool = True) -> str:
    """``doc`` as JSON text with ``schema``/``schema_version`` first (``strict``: no NaN/Inf)."""
    body = {k: v for k, v in doc.items() if k not in ("schema", "schema_version")}
    return json.dumps({"schema": schema, "schema_version": version, **body}, indent=indent,
                      allow_nan=not strict) + "\n"


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any], *, schema: str, version: int,
               indent: int | None = 2, strict: bool = True) -> Path:
    """Write ``doc`` atomically (a reader sees the old file or the whole new one); returns the path."""
    target = Path(path)
    write_text(target, dumps(doc, schema=schema, version=version, indent=indent, strict=strict))
    return target


def read_json(path: str | os.PathLike[str], *, schema: str, version: int,
              error: type[HifitrtError] = HifitrtError, fix: str = "regenerate it") -> dict[str, Any]:
    """The JSON object in ``path`` if it has ``schema`` and ``version``; else ``error`` saying
    what is wrong and ``fix`` (what the user should do)."""
    target = Path(path)
    try:
        doc = json.loads(target.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{target} does not exist: {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{target} cannot be read ({' '.join(str(exc).split())}): {fix}") from None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise error(f"{target} is not a {schema} file (schema {found!r}): {fix}")
    if doc.get("schema_version") != version:
        raise error(f"{target} has {schema} version {doc.get('schema_version')!r}, this hifitrt reads "
                    f"version {version}: {fix}")
    return doc
