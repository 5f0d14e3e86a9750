"""Finished units of a study, one JSON file each, written atomically: what is on disk is done."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medsyn.atomic import write_json


def _plain(value: Any) -> Any:
    """numpy scalars and arrays -> JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json_atomic(path: Path, obj: Any) -> None:
    """``obj`` with numpy values made plain, through ``medsyn.atomic.write_json``."""
    write_json(path, _plain(obj), indent=1)


class UnitStore:
    """Keyed results under ``root/units``; a unit exists only once its whole result was written."""

    def __init__(self, root: Path):
        self.root = Path(root) / "units"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str) -> dict[str, Any]:
        try:
            return json.loads(self.path(key).read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def save(self, key: str, result: dict[str, Any]) -> dict[str, Any]:
        write_json_atomic(self.path(key), result)
        return result

    def all(self, prefix: str) -> list[dict[str, Any]]:
        folder = self.root / prefix
        return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))] if folder.is_dir() else []
