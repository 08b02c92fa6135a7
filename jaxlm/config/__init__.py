"""The config: `base_config()` defines every field once (`base.py`); `validate` checks a config
before anything is built (`checks.py`). Recipes in `configs/` start from `base_config()`."""

from jaxlm.config.base import (
                               BEST_METRICS,
                               DEFAULT_RULES,
                               FAMILIES,
                               MESH_AXES,
                               POOLINGS,
                               TASKS,
                               base_config,
)
from jaxlm.config.checks import (
                               ConfigError,
                               mesh_shape,
                               validate,
                               validate_fields,
                               validate_finetune,
)

__all__ = ["BEST_METRICS", "DEFAULT_RULES", "FAMILIES", "MESH_AXES", "POOLINGS", "TASKS",
           "ConfigError", "base_config", "mesh_shape", "validate", "validate_fields",
           "validate_finetune"]
