"""Where browser tests put their screenshots.

The committed ``docs/screenshots/`` are refreshed only on request
(``WORKBENCH_REFRESH_SCREENSHOTS=1 python -m pytest tests/test_ui_browser.py
tests/test_jupyter_extension.py``); otherwise they go to a temporary folder, so a test run
leaves the working tree as it found it.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@lru_cache(maxsize=1)
def screenshot_dir() -> Path:
    if os.environ.get("WORKBENCH_REFRESH_SCREENSHOTS", "") in ("1", "true", "yes"):
        path = DOCS_SCREENSHOTS
    else:
        path = Path(tempfile.mkdtemp(prefix="workbench-screenshots-"))
    path.mkdir(parents=True, exist_ok=True)
    return path
