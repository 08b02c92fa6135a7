"""A step sharded over 8 devices (data=2, fsdp=2, tensor=2) equals the 1-device step.

The comparisons run real updates (warmup 0, >= 2 steps) with plain SGD, where a wrong
gradient scale (a 1/N reduction bug) moves the parameters by a different amount; Adam and
global-norm clipping would hide it. Gradients are compared directly through `grad_norm`.
Each parameter check has negative controls: the same assertion fails on the untrained
parameters and on a run whose gradient is deliberately scaled by 1/2.
"""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
from conftest import tiny_config

from jaxlm import train
from jaxlm.config import ConfigError


def _batch(seq_len=32, batch=8, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(7, 200, (batch, seq_len + 1)).astype(np.int32)
  return {"tokens": tokens, "segment_ids": np.ones_like(tokens),
          "positions": np.tile(np.arange(seq_len + 1, dtype=np.int32), (batch, 1))}


SGD_LR = 0.5


def sgd_run(config, devices=None, grad_scale: float = 1.0) -> train.Run:
  """A Run with plain SGD (lr SGD_LR) instead of AdamW; `grad_scale` != 1 is a broken run."""
  config.optimizer.warmup_steps = 0
  run = train.Run(config, None, devices=devices)
  run.tx = optax.chain(optax.scale(grad_scale), optax.sgd(SGD_LR))
  run._init_shardings()  # noqa: SLF001  (the state's optimizer part follows tx)
  return run


def steps(run, state, batches):
  """Runs the jitted train step over `batches`: (state, losses, grad norms)."""
  step = run.jit_train_step()
  losses, norms = [], []
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    for b in batches:
      state, m = step(state, run.to_global(b))
      losses.append(float(m["train_loss"]))
      norms.append(float(m["grad_norm"]))
  return state, losses, norms


def params_close(a, b, rtol=1e-4, atol=1e-5) -> bool:
  """Every parameter of `a` equals that of `b` within the tolerance."""
  return all(np.allclose(x, y, rtol=rtol, atol=atol) for x, y in
             zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b)),
                 strict=True))


def check_same_updates(ref, ref_init, other, broken) -> None:
  """`other` params equal `ref`; the untrained and the mis-scaled params do not."""
  assert params_close(ref, other)
  assert not params_close(ref, ref_init), "negative control: the steps changed nothing"
  assert not params_close(ref, broken), "negative control: a 1/2 gradient passes too"


@pytest.mark.parametrize("overrides", [
    {},
    {"model.position": "rope", "model.num_kv_heads": 2, "model.scan_layers": True},
    {"optimizer.grad_accum_steps": 2},
])
def test_sharded_step_matches_single_device(text_file, data_dir, overrides):
  assert jax.device_count() == 8
  c1 = tiny_config(text_file, data_dir, **overrides)
  c8 = tiny_config(text_file, data_dir, **overrides, **{"mesh.shape": (2, 2, 2)})
  r1 = sgd_run(c1, devices=jax.devices()[:1])
  r8 = sgd_run(c8)
  init = r1.init_state()
  s8 = jax.device_put(jax.device_get(init), r8.state_shardings)
  # Parameters really are split: the embedding table is sharded over fsdp and tensor.
  emb = s8.params["embed"]["embedding"]
  assert emb.addressable_shards[0].data.shape == (emb.shape[0] // 2, emb.shape[1] // 2)
  init = jax.device_get(init)
  batches = [_batch(seed=i) for i in range(3)]
  s1, l1, g1 = steps(r1, jax.device_put(init), batches)
  s8, l8, g8 = steps(r8, s8, batches)
  np.testing.assert_allclose(l1, l8, rtol=2e-5)  # Losses 2 and 3 follow real updates.
  np.testing.assert_allclose(g1, g8, rtol=1e-4)  # The gradients themselves.
  r1.tx = optax.chain(optax.scale(0.5), optax.sgd(SGD_LR))  # Same state layout, 1/2 gradient.
  broken, _, _ = steps(r1, jax.device_put(init), batches)
  check_same_updates(s1.params, init.params, s8.params, broken.params)


def test_grad_accumulation_equals_large_batch(text_file, data_dir):
  runs = [sgd_run(tiny_config(text_file, data_dir, **{"optimizer.grad_accum_steps": a}),
                  devices=jax.devices()[:1]) for a in (1, 4)]
  init = jax.device_get(runs[0].init_state())
  batches = [_batch(seed=5), _batch(seed=6), _batch(seed=7)]  # Losses 2, 3 see updates.
  (s1, l1, g1), (s4, l4, g4) = [steps(r, jax.device_put(init), batches) for r in runs]
  np.testing.assert_allclose(l1, l4, rtol=1e-5)
  np.testing.assert_allclose(g1, g4, rtol=1e-4)  # Microbatch gradients are averaged, not summed.
  runs[1].tx = optax.chain(optax.scale(0.5), optax.sgd(SGD_LR))
  broken, _, _ = steps(runs[1], jax.device_put(init), batches)
  check_same_updates(s1.params, init.params, s4.params, broken.params)


def test_bad_mesh_and_batch_fail_before_training(text_file, data_dir):
  with pytest.raises(ConfigError, match="mesh.shape"):
    train.Run(tiny_config(text_file, data_dir, **{"mesh.shape": (3, 1, 1)}), None)
  with pytest.raises(ConfigError, match="data.batch_size"):
    train.Run(tiny_config(text_file, data_dir, **{"data.batch_size": 12}), None)


@pytest.mark.parametrize("model", [{}, {"model.family": "lstm", "model.carry_state": True}])
def test_flat_allreduce_equals_xlas_per_parameter_allreduce(text_file, data_dir, model):
  """Data parallel on 8 CPU devices: `mesh.cpu_flat_allreduce` (one psum of the raveled
  gradient in a shard_map) gives the updates of XLA's partitioned step, with one all-reduce
  of one array instead of one operand per parameter; an LSTM's carried state stays with its
  rows (each device continues its own lanes)."""
  config = lambda **kw: tiny_config(text_file, data_dir, **{"mesh.shape": (8, 1, 1)}, **model,
                                    **kw)
  flat, xla = sgd_run(config()), sgd_run(config(**{"mesh.cpu_flat_allreduce": False}))
  assert flat.flat_allreduce and not xla.flat_allreduce
  init = jax.device_get(flat.init_state())
  batches = [_batch(seed=i) for i in range(3)]
  s_flat, l_flat, g_flat = steps(flat, jax.device_put(init, flat.state_shardings), batches)
  s_xla, l_xla, g_xla = steps(xla, jax.device_put(init, xla.state_shardings), batches)
  np.testing.assert_allclose(l_flat, l_xla, rtol=1e-6)
  np.testing.assert_allclose(g_flat, g_xla, rtol=1e-5)
  broken = sgd_run(config(), grad_scale=0.5)
  s_broken, _, _ = steps(broken, jax.device_put(init, broken.state_shardings), batches)
  check_same_updates(s_xla.params, init.params, s_flat.params, s_broken.params)
  if model:  # The carried (c, h) after 3 windows: equal, and not the initial zeros.
    assert params_close(s_xla.carry, s_flat.carry, rtol=1e-5, atol=1e-6)
    assert not params_close(s_xla.carry, init.carry)

  def all_reduces(run):
    state, batch = run.abstract_state, run.to_global(_batch())
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
      hlo = run.jit_train_step().lower(state, batch).compile().as_text()
    return [line for line in hlo.splitlines() if " all-reduce(" in line]

  one = all_reduces(flat)
  assert len(one) == 1 and one[0].split("=")[1].split("all-reduce(")[0].strip().count("[") == 1
  many = all_reduces(xla)  # One tuple all-reduce of every parameter's gradient.
  assert sum(line.split("all-reduce(")[0].count("f32[") for line in many) > 10
  # Randomness in the step (dropout) keeps XLA's partitioning: drawn per shard it would differ.
  assert not sgd_run(tiny_config(text_file, data_dir, **{"mesh.shape": (8, 1, 1),
                                                        "model.dropout": 0.1})).flat_allreduce
  assert not sgd_run(tiny_config(text_file, data_dir, **{"mesh.shape": (4, 2, 1)})).flat_allreduce
