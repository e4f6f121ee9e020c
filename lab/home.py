"""The lab's home folder: tracking store, demo data and (later) ledgers and audit log.

``$LAB_HOME`` when set, else ``~/.lab``. Nothing is created until something needs it.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LAB_HOME"


def lab_home() -> Path:
    """Return the lab's home folder (not created)."""
    raw = os.environ.get(ENV_VAR)
    return Path(raw).expanduser().resolve() if raw else Path.home() / ".lab"


def ensure(path: Path) -> Path:
    """Create ``path`` (a directory) if needed and return it."""
    path.mkdir(parents=True, exist_ok=True)
    return path
