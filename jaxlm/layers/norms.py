"""Normalization layers with logical axis names on their scales.

Example:
  >>> norm = make_norm("rmsnorm")
  >>> y_BLD = norm.apply(norm.init(key, x_BLD), x_BLD)
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def make_norm(kind: str, dtype=jnp.float32, param_dtype=jnp.float32, name: str | None = None,
              use_bias: bool = True) -> nn.Module:
  """LayerNorm or RMSNorm; statistics are computed in float32 either way."""
  scale_init = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
  if kind == "layernorm":
    return nn.LayerNorm(dtype=dtype, param_dtype=param_dtype, use_bias=use_bias, name=name,
                        scale_init=scale_init,
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)))
  if kind == "rmsnorm":
    return nn.RMSNorm(dtype=dtype, param_dtype=param_dtype, name=name, scale_init=scale_init)
  raise ValueError(f"Unknown norm {kind!r}; use 'layernorm' or 'rmsnorm'.")
