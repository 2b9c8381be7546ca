"""The Mobile-Former model family: configs, modules, presets, analytic complexity."""

from __future__ import annotations

from os import PathLike

from .checkpoint import CheckpointError, load_released_checkpoint, released_key_map
from .config import BlockConfig, ConfigError, MobileFormerConfig
from .fuse import inference_model
from .mobile_former import Complexity, MobileFormer, complexity, count_params
from .presets import PAPER, get_config, list_models


def resolve_config(spec: str | PathLike | MobileFormerConfig | dict) -> MobileFormerConfig:
    """A config from a preset name, a YAML/JSON file path, a dict, or a config."""
    if isinstance(spec, MobileFormerConfig):
        return spec
    if isinstance(spec, dict):
        return MobileFormerConfig.from_dict(spec)
    name = str(spec)
    if name in list_models():
        return get_config(name)
    if name.endswith((".yaml", ".yml", ".json")):
        from .io import load_config_file

        return load_config_file(name)
    raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())} (or a .yaml config file)")


def create_model(
    name_or_config: str | PathLike | MobileFormerConfig | dict,
    num_classes: int | None = None,
    features_only: bool = False,
    **overrides,
) -> MobileFormer:
    """Build a Mobile-Former from a preset name, a config file, a dict or a config.

    ``num_classes`` and any config field given as keyword (``dropout=0.1``,
    ``activation="relu"``...) override the config.
    """
    cfg = resolve_config(name_or_config)
    if num_classes is not None:
        overrides["num_classes"] = num_classes
    if overrides:
        cfg = cfg.replace(**overrides)
    return MobileFormer(cfg, features_only=features_only)


__all__ = [
    "PAPER", "BlockConfig", "CheckpointError", "Complexity", "ConfigError", "MobileFormer",
    "MobileFormerConfig", "complexity", "count_params", "create_model", "get_config", "inference_model", "list_models",
    "load_released_checkpoint", "released_key_map", "resolve_config",
]
