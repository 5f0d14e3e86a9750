"""Finished units of a study, one JSON file each, written atomically: what is on disk is done; and
the folder's record of the one study whose units it holds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medsyn.atomic import write_json
from medsyn.errors import RunError


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


def check_same_study(out: Path, resolved: dict[str, Any]) -> None:
    """Finished units are reused by key, so a folder must only ever hold one resolved study. The one
    exception: a classic.copies list may change to another list, since the units it adds or drops
    are keyed by their number of copies (medsyn.study.sweep).

    Raises:
        RunError: ``out`` holds a study with other settings (named), or is not a study folder.
    """
    marker = out / "study.json"
    if marker.is_file():
        stored = _sweep_values_hidden(json.loads(marker.read_text()).get("resolved"))
        compared = _sweep_values_hidden(_plain_json(resolved))
        if stored != compared:
            changed = sorted(k for k in compared if stored is None or stored.get(k) != compared[k])
            raise RunError(f"{out}: holds a study with other settings ({', '.join(changed) or 'format'}); "
                           "rerun with the same YAML and flags, or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: exists and is not a study folder; choose another --out")


def write_study_marker(out: Path, resolved: dict[str, Any]) -> None:
    """Written (again) before the first unit, so a sweep's changed list of copies is what it holds."""
    write_json_atomic(out / "study.json", {"resolved": resolved})


def _plain_json(value: Any) -> Any:
    """What ``value`` reads back as from JSON (tuples as lists), to compare it with a stored one."""
    return json.loads(json.dumps(_plain(value)))


def _sweep_values_hidden(resolved: dict | None) -> dict | None:
    """A resolved study with a classic.copies list replaced by a placeholder, so that two studies that
    differ only in the values their sweep tries compare equal."""
    if resolved is None or not isinstance(resolved.get("classic", {}).get("copies"), list):
        return resolved
    return {**resolved, "classic": {**resolved["classic"], "copies": "a list (its values may change)"}}
