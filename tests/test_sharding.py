"""A step sharded over 8 devices (data=2, fsdp=2, tensor=2) equals the 1-device step."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import tiny_config

from jaxlm import train
from jaxlm.config import ConfigError


def _batch(seq_len=32, batch=8, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(7, 200, (batch, seq_len + 1)).astype(np.int32)
  return {"tokens": tokens, "segment_ids": np.ones_like(tokens),
          "positions": np.tile(np.arange(seq_len + 1, dtype=np.int32), (batch, 1))}


def _steps(run, state, batches):
  step = run.jit_train_step()
  losses = []
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    for b in batches:
      state, m = step(state, run.to_global(b))
      losses.append(float(m["train_loss"]))
  return state, losses


@pytest.mark.parametrize("overrides", [
    {},
    {"model.position": "rope", "model.num_kv_heads": 2, "model.scan_layers": True},
    {"optimizer.grad_accum_steps": 2},
])
def test_sharded_step_matches_single_device(text_file, data_dir, overrides):
  assert jax.device_count() == 8
  c1 = tiny_config(text_file, data_dir, **overrides)
  c8 = tiny_config(text_file, data_dir, **overrides, **{"mesh.shape": (2, 2, 2)})
  r1 = train.Run(c1, None, devices=jax.devices()[:1])
  r8 = train.Run(c8, None)
  s1 = r1.init_state()
  s8 = jax.device_put(jax.device_get(s1), r8.state_shardings)
  # Parameters really are split: the embedding table is sharded over fsdp and tensor.
  emb = s8.params["embed"]["embedding"]
  assert emb.addressable_shards[0].data.shape == (emb.shape[0] // 2, emb.shape[1] // 2)
  batches = [_batch(seed=i) for i in range(3)]
  s1, l1 = _steps(r1, s1, batches)
  s8, l8 = _steps(r8, s8, batches)
  np.testing.assert_allclose(l1, l8, rtol=2e-5)
  # Parameters: Adam turns float noise in gradients that are zero in exact arithmetic (the
  # key bias: softmax ignores it) into +-lr steps, so allow a few lr-sized differences.
  for a, b in zip(jax.tree.leaves(jax.device_get(s1.params)),
                  jax.tree.leaves(jax.device_get(s8.params)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=3 * c1.optimizer.learning_rate)


def test_grad_accumulation_equals_large_batch(text_file, data_dir):
  runs = [train.Run(tiny_config(text_file, data_dir, **{"optimizer.grad_accum_steps": a,
                                                         "optimizer.warmup_steps": 0}), None,
                    devices=jax.devices()[:1]) for a in (1, 4)]
  states = [r.init_state() for r in runs]
  batches = [_batch(seed=5), _batch(seed=6)]  # The 2nd loss sees the 1st update.
  out = [_steps(r, s, batches) for r, s in zip(runs, states, strict=True)]
  np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(out[0][0].params), jax.tree.leaves(out[1][0].params),
                  strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3)


def test_bad_mesh_and_batch_fail_before_training(text_file, data_dir):
  with pytest.raises(ConfigError, match="mesh.shape"):
    train.Run(tiny_config(text_file, data_dir, **{"mesh.shape": (3, 1, 1)}), None)
  with pytest.raises(ConfigError, match="data.batch_size"):
    train.Run(tiny_config(text_file, data_dir, **{"data.batch_size": 12}), None)
