"""mfsearch: architecture search and ablation studies around Mobile-Former."""

from __future__ import annotations

from .models import (
    PAPER,
    BlockConfig,
    ConfigError,
    MobileFormer,
    MobileFormerConfig,
    complexity,
    count_params,
    create_model,
    get_config,
    list_models,
    load_released_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "PAPER", "BlockConfig", "ConfigError", "MobileFormer", "MobileFormerConfig", "__version__",
    "complexity", "count_params", "create_model", "get_config", "list_models", "load_released_checkpoint",
]
