"""Reading the project's JSON files (model manifests, add-on manifests, model indexes) with
errors that name the file and what is wrong."""

from __future__ import annotations

import json
from pathlib import Path


def read_json_object(path: Path, error: type[Exception], missing: str) -> dict:
    """The JSON object in ``path``; ``error(missing)`` when there is no such file, and an
    ``error`` naming the file when it is not JSON or not an object."""
    if not path.is_file():
        raise error(missing)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path} must hold a JSON object, got a {type(data).__name__}")
    return data
