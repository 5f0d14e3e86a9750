"""Named training configs shipped with medsyn (YAML files in this folder).

``small-data`` is the recommended recipe: what the measurements in docs/quality.md showed works
best for small medical sets at laptop budgets. The papers' models keep their papers' defaults;
a recipe is what medsyn recommends on top of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medsyn.config import load_yaml

RECIPE_DIR = Path(__file__).parent
DEFAULT_RECIPE = "small-data"


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path | None:
    path = RECIPE_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def load_recipe(name: str = DEFAULT_RECIPE) -> dict[str, Any]:
    path = recipe_path(name)
    if path is None:
        from medsyn.errors import ConfigError

        raise ConfigError(f"no recipe {name!r}; shipped recipes: {', '.join(recipe_names())}")
    return load_yaml(path)


def load_config_layer(text: str | Path) -> dict[str, Any]:
    """``--config``: a YAML file, or the name of a shipped recipe (e.g. ``small-data``)."""
    if not Path(text).exists() and recipe_path(str(text)) is not None:
        return load_recipe(str(text))
    return load_yaml(text)


def describe_recipe(name: str = DEFAULT_RECIPE) -> str:
    """One line: the recipe's settings, e.g. 'model dcgan, width 0.25, ...'."""
    return ", ".join(f"{key} {value}" for key, value in load_recipe(name).items())
