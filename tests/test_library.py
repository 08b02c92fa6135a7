"""jaxlm.layers as a library: docstring examples run, and a custom model trains."""

import importlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlm.layers.attention import Attention
from jaxlm.layers.embeddings import Embed
from jaxlm.layers.lstm import LSTM
from jaxlm.layers.mlp import Mlp
from jaxlm.layers.norms import make_norm

MODULES = ["attention", "embeddings", "lstm", "mlp", "norms", "transformer"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_example_runs(name):
  """Each layer module's docstring example, run with the inputs its names promise."""
  module = importlib.import_module(f"jaxlm.layers.{name}")
  code = [line.strip()[4:] for line in module.__doc__.splitlines()
          if line.strip().startswith((">>> ", "... "))]
  assert code, f"jaxlm.layers.{name} has no docstring example"
  env = dict(vars(module))
  env.update(
      key=jax.random.key(0), jnp=jnp,
      x_BLD=jax.random.normal(jax.random.key(1), (2, 8, 64)),
      x2_BLD=jax.random.normal(jax.random.key(2), (2, 8, 64)),
      ids_BL=jnp.arange(16).reshape(2, 8), positions_BL=jnp.broadcast_to(jnp.arange(8), (2, 8)),
      q_BLHE=jax.random.normal(jax.random.key(3), (2, 8, 4, 16)))
  before = dict(env)
  exec("\n".join(code), env)  # noqa: S102
  bound = sorted(k for k in env if k not in before or env[k] is not before[k])
  # Every array the example binds has the shape its name promises, and finite values.
  dims = {"B": 2, "L": 8, "D": 64, "E": 16, "H": 64 if name == "lstm" else 4}
  checked = 0
  for var in bound:
    suffix = var.rsplit("_", 1)[-1]
    if "_" in var and suffix.isupper() and set(suffix) <= set(dims):
      value = np.asarray(env[var])
      assert value.shape == tuple(dims[d] for d in suffix), (var, value.shape)
      assert np.isfinite(value).all(), var
      checked += 1
  assert checked, f"jaxlm.layers.{name}'s example binds no shape-named result"
  if name != "embeddings":  # A layer computes something: its output is not its input.
    out = env[next(v for v in bound if v.startswith("y"))]
    assert not np.allclose(np.asarray(out)[..., :8], np.asarray(env["x_BLD"])[..., :8])
  else:  # Rotary positions rotate the queries (position 0 is left as it is).
    assert not np.allclose(env["q_BLHE"][:, 1:], before["q_BLHE"][:, 1:])
  if name == "lstm":  # Continuing from the carry differs from starting afresh.
    fresh, _ = env["lstm"].apply(env["variables"], env["x2_BLD"])
    assert not np.allclose(fresh, env["y2_BLH"])


class TinyClassifier(nn.Module):
  """A user's model from the public layers only: embed -> LSTM -> attention -> pooled logits."""

  @nn.compact
  def __call__(self, ids_BL):
    x_BLD = Embed(num_embeddings=32, features=32)(ids_BL)
    x_BLD, _ = LSTM(hidden_dim=32)(x_BLD)
    pos_BL = jnp.broadcast_to(jnp.arange(ids_BL.shape[1]), ids_BL.shape)
    h_BLD = make_norm("layernorm")(x_BLD)
    x_BLD = x_BLD + Attention(num_heads=4, head_dim=8, causal=False, position="rope")(h_BLD,
                                                                                      pos_BL)
    x_BLD = x_BLD + Mlp(mlp_dim=64, kind="swiglu")(make_norm("rmsnorm")(x_BLD))
    return nn.Dense(2)(x_BLD.mean(axis=1))


def test_custom_model_from_public_layers_trains():
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 32, (32, 12)).astype(np.int32)
  labels = (ids == 5).any(axis=1).astype(np.int32)  # Needs a look at every position.
  model = TinyClassifier()
  params = nn.meta.unbox(model.init(jax.random.key(0), ids)["params"])
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    def loss_fn(p):
      logits = model.apply({"params": p}, ids)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt, loss

  losses = []
  for _ in range(60):
    params, opt, loss = step(params, opt)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0]
