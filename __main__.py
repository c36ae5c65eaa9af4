"""``python -m hifitrt`` is the same as ``tts-build-engine``."""
from __future__ import annotations

from hifitrt.cli import main

raise SystemExit(main())
