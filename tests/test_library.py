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
  exec("\n".join(code), env)  # noqa: S102


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
