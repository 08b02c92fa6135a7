"""The Transformer feed-forward block: GELU MLP or SwiGLU.

Example:
  >>> mlp = Mlp(mlp_dim=128, kind="swiglu")
  >>> y_BLD = mlp.apply(mlp.init(key, x_BLD), x_BLD)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def dense_init(axes: tuple, scale: float = 1.0, in_axis=-2, out_axis=-1):
  """Fan-in scaled normal init with logical axis names attached."""
  return nn.with_logical_partitioning(nn.initializers.variance_scaling(
      scale, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis), axes)


def bias_init(axes: tuple):
  return nn.with_logical_partitioning(nn.initializers.zeros, axes)


class Mlp(nn.Module):
  """x -> act(x W1) W2 (gelu, relu, relu2 = relu(.)^2) or (silu(x Wg) * x W1) W2 (swiglu).

  relu2 (squared ReLU, So et al. 2021 "Primer") trains as well as GELU at these sizes and is
  cheaper on CPU, where the tanh of GELU is a visible share of the step.
  """

  mlp_dim: int
  kind: str = "gelu"
  use_bias: bool = True
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  out_scale: float = 1.0  # Shrinks the output init (deep residual stacks).

  @nn.compact
  def __call__(self, x_BLD: jax.Array, deterministic: bool = True) -> jax.Array:
    d = x_BLD.shape[-1]
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=self.use_bias,
              bias_init=bias_init(("mlp",)))
    h_BLF = nn.Dense(self.mlp_dim, kernel_init=dense_init(("embed", "mlp")), name="wi", **kw)(x_BLD)
    if self.kind == "gelu":
      h_BLF = nn.gelu(h_BLF)
    elif self.kind == "relu":
      h_BLF = nn.relu(h_BLF)
    elif self.kind == "relu2":
      h_BLF = jnp.square(nn.relu(h_BLF))
    elif self.kind == "swiglu":
      g_BLF = nn.Dense(self.mlp_dim, kernel_init=dense_init(("embed", "mlp")), name="wg",
                       **kw)(x_BLD)
      h_BLF = nn.silu(g_BLF) * h_BLF
    else:
      raise ValueError(f"Unknown MLP kind {self.kind!r}; use 'gelu', 'relu', 'relu2' or 'swiglu'.")
    h_BLF = nn.with_logical_constraint(h_BLF, ("act_batch", "act_seq", "act_mlp"))
    h_BLF = nn.Dropout(self.dropout)(h_BLF, deterministic=deterministic)
    kw["bias_init"] = bias_init(("embed",))
    return nn.Dense(d, kernel_init=dense_init(("mlp", "embed"), self.out_scale), name="wo",
                    **kw)(h_BLF)
