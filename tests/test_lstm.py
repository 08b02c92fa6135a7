"""LSTM speed levers (jaxlm#16 item 4) against a step-by-step LSTM, and the uniform init."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import models
from jaxlm.config import base_config
from jaxlm.layers.lstm import LSTM


def _reference_layer(p, x_BLD, c_BH, h_BH):
  """Per time step: the input projection, four separate [H, H] gate matmuls."""
  wi, b, wh = p["wi"]["kernel"], p["wi"]["bias"], p["cell"]["wh"]["kernel"]
  hid = wh.shape[0]
  out = []
  for t in range(x_BLD.shape[1]):
    x = x_BLD[:, t]
    gate = [x @ wi[:, k * hid:(k + 1) * hid] + b[k * hid:(k + 1) * hid]
            + h_BH @ wh[:, k * hid:(k + 1) * hid] for k in range(4)]
    i, f, g, o = gate
    c_BH = jax.nn.sigmoid(f) * c_BH + jax.nn.sigmoid(i) * jnp.tanh(g)
    h_BH = jax.nn.sigmoid(o) * jnp.tanh(c_BH)
    out.append(h_BH)
  return jnp.stack(out, 1), (c_BH, h_BH)


@pytest.mark.parametrize("unroll", [1, 3, 8])
def test_lstm_layer_equals_step_by_step(unroll):
  b, length, d, hid = 3, 10, 6, 5
  x = jax.random.normal(jax.random.key(0), (b, length, d))
  layer = LSTM(hid, unroll=unroll)
  params = nn.unbox(layer.init(jax.random.key(1), x))["params"]
  c0 = jax.random.normal(jax.random.key(2), (b, hid))
  h0 = jax.random.normal(jax.random.key(3), (b, hid))
  got, (c, h) = layer.apply({"params": params}, x, (c0, h0))
  want, (cw, hw) = _reference_layer(params, x, c0, h0)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(c, cw, atol=1e-5)
  np.testing.assert_allclose(h, hw, atol=1e-5)
  # Negative control: the reference is sensitive to the recurrence (zero state differs).
  other, _ = _reference_layer(params, x, jnp.zeros_like(c0), jnp.zeros_like(h0))
  assert float(jnp.abs(other - want).max()) > 1e-3


@pytest.mark.parametrize("unroll", [1, 4])
def test_lstm_lm_equals_step_by_step_with_per_step_output_projection(unroll):
  c = base_config().model
  c.family, c.num_layers, c.emb_dim, c.tie_embeddings = "lstm", 2, 8, False
  c.lstm_unroll, c.init_scale = unroll, 0.1
  model = models.build_model(c, vocab_size=50, seq_len=7)
  ids = jax.random.randint(jax.random.key(0), (2, 7), 7, 50)
  params = nn.unbox(model.init(jax.random.key(1), ids))["params"]
  logits = model.apply({"params": params}, ids)
  x = params["embed"]["embedding"][ids]
  for i in range(2):
    zeros = jnp.zeros((2, 8))
    x, _ = _reference_layer(params[f"lstm_{i}"], x, zeros, zeros)
  for t in range(7):  # Output projection step by step.
    want = x[:, t] @ params["lm_head"]["kernel"] + params["output_bias"]
    np.testing.assert_allclose(logits[:, t, :50], want[:, :50], atol=1e-5)


def test_uniform_init_scale_and_checkpoint_compatible_names():
  c = base_config().model
  c.family, c.num_layers, c.emb_dim, c.tie_embeddings = "lstm", 2, 16, False
  ids = jnp.zeros((1, 4), jnp.int32)
  default = nn.unbox(models.build_model(c, 300, 4).init(jax.random.key(0), ids))["params"]
  c.init_scale = 0.05
  uni = nn.unbox(models.build_model(c, 300, 4).init(jax.random.key(0), ids))["params"]
  assert jax.tree.map(jnp.shape, default) == jax.tree.map(jnp.shape, uni)  # Same checkpoint.
  flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(uni)}
  for name, v in flat.items():
    if "bias" in name:
      assert float(jnp.abs(v).max()) == 0.0, name
    else:
      assert float(jnp.abs(v).max()) <= 0.05 and float(jnp.abs(v).max()) > 0.045, name
  emb = default["embed"]["embedding"]
  assert float(jnp.abs(emb).max()) > 0.05  # Negative control: the default init is not it.
