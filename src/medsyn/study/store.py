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


def check_same_study(out: Path, resolved: dict[str, Any]) -> dict[str, Any]:
    """Finished units are reused by key, so a folder must only ever hold one resolved study. Two
    exceptions, both safe because the units they add or drop have keys of their own:
    - a classic.copies list may change to another list (its units are keyed by number of copies,
      medsyn.study.sweep);
    - generator entries may be added (or left out): a study can be run in parts, one generator
      after another, into one folder. Units are keyed by the entry's name, so an entry of a name
      the folder has trained must keep its settings.

    Returns:
        What the folder's marker should hold: ``resolved`` with every generator entry the folder
        has ever trained, so an entry left out of one run cannot come back changed in a later one.

    Raises:
        RunError: ``out`` holds a study with other settings (named), or is not a study folder.
    """
    marker = out / "study.json"
    if marker.is_file():
        stored = json.loads(marker.read_text()).get("resolved")
        compared = _plain_json(resolved)
        if isinstance(stored, dict) and isinstance(stored.get("generators"), list):
            compared["generators"] = _generators_grown(out, stored["generators"], compared["generators"])
            stored = {**stored, "generators": compared["generators"]}  # grown by the rule above, not changed
        stored, hidden = _sweep_values_hidden(stored), _sweep_values_hidden(compared)
        if stored != hidden:
            changed = sorted(k for k in hidden if stored is None or stored.get(k) != hidden[k])
            raise RunError(f"{out}: holds a study with other settings ({', '.join(changed) or 'format'}); "
                           "rerun with the same YAML and flags, or choose another --out")
        return compared
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: exists and is not a study folder; choose another --out")
    return resolved


def _generators_grown(out: Path, stored: list, wanted: list) -> list:
    """The folder's generator entries followed by the new ones of ``wanted``.

    Raises:
        RunError: an entry of ``wanted`` has the name of a stored one with other settings.
    """
    by_name = {g.get("name"): g for g in stored}
    for entry in wanted:
        old = by_name.get(entry.get("name"))
        if old is not None and old != entry:
            keys = sorted(k for k in {*old, *entry} if old.get(k) != entry.get(k))
            raise RunError(f"{out}: its generator {entry.get('name')!r} was trained with other settings "
                           f"({', '.join(keys)}); give the changed entry a new name, or choose another --out")
    return [*stored, *(g for g in wanted if g.get("name") not in by_name)]


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
