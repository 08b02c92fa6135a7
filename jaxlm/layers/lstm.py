"""LSTM layer: the input projection for all steps at once, then `nn.scan` of the recurrence.

The speed levers (jaxlm#16), each equal to the step-by-step LSTM to 1e-5 (tests/test_lstm.py):
the input-to-hidden projection of all L steps is one [B*L, D] x [D, 4H] matmul before the scan;
each step does one fused [H, 4H] recurrent matmul (not four [H, H] ones); the caller projects
the outputs to the vocabulary after the scan (one matmul for all steps, `models.LSTMLM`); and
`unroll` unrolls the scan that many steps (fewer loop iterations; same results).
`init_scale > 0` draws every weight uniformly from [-init_scale, init_scale] (Zaremba et al.
2014); biases start at 0. Parameter names and shapes are the same for every setting.

Shape key as in `jaxlm.layers`; G = 4 * H gate pre-activations (input, forget, cell, output).
The carry `(c_BH, h_BH)` can be passed in and is returned, so a caller can run a long
stream window by window (truncated backprop through time) and get the same outputs as
on the whole stream. `reset_BL` zeroes the state before the marked steps (document starts).

Example:
  >>> lstm = LSTM(hidden_dim=64)
  >>> variables = lstm.init(key, x_BLD)
  >>> y_BLH, (c_BH, h_BH) = lstm.apply(variables, x_BLD)
  >>> y2_BLH, carry = lstm.apply(variables, x2_BLD, carry=(c_BH, h_BH))  # continue the stream
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlm.layers.mlp import bias_init, dense_init


def weight_init(axes: tuple, init_scale: float = 0.0):
  """uniform(-s, s) with logical axis names if init_scale = s > 0; else `dense_init`."""
  if not init_scale:
    return dense_init(axes)
  uniform = lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -init_scale, init_scale)
  return nn.with_logical_partitioning(uniform, axes)


class LSTMCell(nn.Module):
  """One time step: (c, h), input gate pre-activations gx_BG -> new (c, h), h.

  The input projection `gx_BG = x W_i + b` is computed outside (for all steps at
  once); the cell adds the recurrent term `h W_h`.
  """

  hidden_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  init_scale: float = 0.0

  @nn.compact
  def __call__(self, carry, gx_BG: jax.Array, reset_B: jax.Array | None = None):
    c_BH, h_BH = carry
    if reset_B is not None:
      c_BH = jnp.where(reset_B[:, None], 0.0, c_BH).astype(c_BH.dtype)
      h_BH = jnp.where(reset_B[:, None], 0.0, h_BH).astype(h_BH.dtype)
    g_BG = gx_BG + nn.Dense(4 * self.hidden_dim, use_bias=False, dtype=self.dtype,
                            param_dtype=self.param_dtype, name="wh",
                            kernel_init=weight_init(("embed", "mlp"), self.init_scale))(h_BH)
    i_BH, f_BH, g_BH, o_BH = jnp.split(g_BG.astype(jnp.float32), 4, axis=-1)
    c_BH = jax.nn.sigmoid(f_BH) * c_BH.astype(jnp.float32) + jax.nn.sigmoid(i_BH) * jnp.tanh(g_BH)
    h_BH = (jax.nn.sigmoid(o_BH) * jnp.tanh(c_BH)).astype(self.dtype)
    return (c_BH, h_BH), h_BH


def zero_carry(batch: int, hidden_dim: int, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
  """(c_BH, h_BH) zeros; c is kept in float32."""
  return jnp.zeros((batch, hidden_dim), jnp.float32), jnp.zeros((batch, hidden_dim), dtype)


class LSTM(nn.Module):
  """One LSTM layer over a [B, L, D] sequence; returns (h_BLH, final carry)."""

  hidden_dim: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  init_scale: float = 0.0
  unroll: int = 1  # Scan steps unrolled per loop iteration.

  @nn.compact
  def __call__(self, x_BLD: jax.Array, carry=None, reset_BL: jax.Array | None = None):
    b = x_BLD.shape[0]
    gx_BLG = nn.Dense(4 * self.hidden_dim, dtype=self.dtype, param_dtype=self.param_dtype,
                      kernel_init=weight_init(("embed", "mlp"), self.init_scale),
                      bias_init=bias_init(("mlp",)),
                      name="wi")(x_BLD)
    gx_BLG = nn.with_logical_constraint(gx_BLG, ("act_batch", "act_seq", "act_mlp"))
    if carry is None:
      carry = zero_carry(b, self.hidden_dim, self.dtype)
    scan = nn.scan(LSTMCell, variable_broadcast="params", split_rngs={"params": False},
                   in_axes=1, out_axes=1, unroll=max(int(self.unroll), 1))
    cell = scan(self.hidden_dim, self.dtype, self.param_dtype, self.init_scale, name="cell")
    if reset_BL is None:
      carry, h_BLH = cell(carry, gx_BLG)
    else:
      carry, h_BLH = cell(carry, gx_BLG, reset_BL)
    return h_BLH, carry
