"""Model properties: causality, logical axis names, overfitting a batch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxlm import models, train
from jaxlm.config import base_config

VARIANTS = [
    dict(position="learned"),
    dict(position="rope"),
    dict(position="alibi"),
    dict(position="sinusoidal"),
    dict(position="none", sliding_window=4),
    dict(position="rope", num_kv_heads=1, mlp="swiglu", norm="rmsnorm"),
    dict(position="learned", scan_layers=True, remat="full"),
]


def _model(**kw):
  c = base_config()
  c.model.num_layers, c.model.num_heads, c.model.emb_dim, c.model.mlp_dim = 2, 4, 32, 64
  for k, v in kw.items():
    c.model[k] = v
  return models.build_model(c.model, vocab_size=50, seq_len=16)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_causal_gradient_of_future_inputs_is_zero(variant):
  model = _model(**variant)
  ids = jax.random.randint(jax.random.key(1), (2, 16), 7, 50)
  params = model.init(jax.random.key(0), ids)["params"]
  t = 7

  # d logits_t / d (input embeddings): zero for every position after t.
  def logits_at_t(emb_delta):
    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.module.name == "embed" and context.method_name == "__call__":
        out = out + emb_delta
      return out

    with nn.intercept_methods(add_delta):
      logits = model.apply({"params": params}, ids)
    return logits[:, t].sum()

  grads = jax.grad(logits_at_t)(jnp.zeros((2, 16, 32)))
  assert float(jnp.abs(grads[:, t + 1:]).max()) == 0.0
  assert float(jnp.abs(grads[:, :t + 1]).max()) > 0.0


def test_every_parameter_has_logical_axis_names():
  for variant in VARIANTS:
    model = _model(**variant, attention="bilinear", tie_embeddings=False)
    boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
    leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves
    for leaf in leaves:
      assert isinstance(leaf, nn.LogicallyPartitioned), leaf
      assert len(leaf.names) == leaf.value.ndim


def test_tiny_model_overfits_a_batch(text_file, data_dir):
  c = tiny_config(text_file, data_dir, **{"optimizer.learning_rate": 3e-3,
                                          "optimizer.warmup_steps": 0,
                                          "num_train_steps": 150})
  run = train.Run(c, None, devices=jax.devices()[:1])
  state = run.init_state()
  step = run.jit_train_step()
  rng = np.random.default_rng(0)
  tokens = rng.integers(7, 60, (8, 33)).astype(np.int32)
  batch = run.to_global({"tokens": tokens, "segment_ids": np.ones_like(tokens),
                         "positions": np.tile(np.arange(33, dtype=np.int32), (8, 1))})
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    first = None
    for _ in range(150):
      state, m = step(state, batch)
      first = first if first is not None else float(m["train_loss"])
  assert first > 3.5 and float(m["train_loss"]) < 0.2
