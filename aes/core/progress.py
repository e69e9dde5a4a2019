"""Progress reporting for detached runs.

Long stages call :func:`update_progress`; when ``$AES_PROGRESS_FILE`` is set (the detached
launcher in :mod:`aes.ops.runs` sets it), the fields are merged into that JSON file atomically
(:func:`aes.core.io.write_json`). Without the variable it does nothing, so stages run the same under plain ``dvc repro``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from aes.core.io import write_json

ENV_VAR = "AES_PROGRESS_FILE"


def update_progress(**fields) -> None:
    """Merge ``fields`` (JSON-serialisable) into the progress file, stamped with ``updated_at``."""
    target = os.environ.get(ENV_VAR)
    if not target:
        return
    path = Path(target)
    try:
        current = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        current = {}
    current.update(fields)
    current["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_json(path, current)
