"""Optimizer: LR schedule shape and the weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import models, optim
from jaxlm.config import base_config


def test_schedule_warms_up_then_decays_to_end_factor():
  o = base_config().optimizer
  o.learning_rate, o.warmup_steps, o.end_lr_factor = 1e-3, 10, 0.1
  sched = optim.learning_rate_schedule(o, num_train_steps=110)
  assert float(sched(0)) == 0.0
  np.testing.assert_allclose(float(sched(5)), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(float(sched(10)), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(float(sched(110)), 1e-4, rtol=1e-5)
  assert float(sched(60)) < 1e-3


def test_weight_decay_skips_norms_biases_and_embeddings():
  c = base_config()
  model = models.build_model(c.model, vocab_size=300, seq_len=16)
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
  mask = optim.decay_mask(params)
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
          for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert not any(v for k, v in flat.items() if "embedding" in k or "bias" in k or "norm" in k)
  assert all(v for k, v in flat.items() if k.endswith("kernel/value") or k.endswith("kernel"))
  assert any(flat.values())
