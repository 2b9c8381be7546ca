"""Architecture config files (YAML/JSON) with located errors."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..fields import load_yaml, located
from .config import ConfigError, MobileFormerConfig
from .presets import get_config, list_models


def config_from_data(data: object, path: str | Path, lines: dict[str, int], prefix: str = "") -> MobileFormerConfig:
    """A config from loaded YAML data: a mapping of fields, optionally ``base: <preset>`` + overrides.

    A variant is named after its file (a preset's name would borrow the preset's paper figures);
    a file that only restates a preset keeps the preset's name.
    """
    if not isinstance(data, dict):
        raise located(path, lines, prefix.rstrip(".") or "config", "must be a mapping of architecture fields")
    data = dict(data)
    base = data.pop("base", None)
    try:
        if base is not None:
            if base not in list_models():
                raise ConfigError("base", f"unknown preset {base!r}; known: {', '.join(list_models())}")
            merged = get_config(str(base)).to_dict()
            merged.update(data)
            data = merged
        cfg = MobileFormerConfig.from_dict(data, name=Path(path).stem or "config")
        if base is not None and cfg.arch_id == get_config(str(base)).arch_id:  # the preset itself, not a variant
            cfg = cfg.replace(name=str(base))
        return cfg
    except ConfigError as e:
        raise located(path, lines, prefix + e.field, e.rule) from None
    except TypeError as e:  # a wrong type deep in the data (e.g. a list where a number belongs)
        raise located(path, lines, prefix.rstrip(".") or "config", str(e)) from None


def load_config_file(path: str | Path) -> MobileFormerConfig:
    """Load a ``.yaml`` / ``.json`` architecture config; errors read ``file:line: field: rule``."""
    data, lines = load_yaml(path)  # YAML is a superset of JSON
    return config_from_data(data, path, lines)


def dump_config(cfg: MobileFormerConfig) -> str:
    """YAML text that :func:`load_config_file` reads back to an equal config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
