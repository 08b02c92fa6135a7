"""Optimizer: LR schedule shape and the weight-decay mask."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def _step_decay(spe=10, start=4, factor=0.5):
  o = base_config().optimizer
  o.name, o.schedule, o.learning_rate, o.warmup_steps = "sgd", "step_decay", 1.0, 0
  o.steps_per_epoch, o.decay_start_epoch, o.decay_factor = spe, start, factor
  return o


def test_step_decay_is_zarembas_epoch_staircase():
  o = _step_decay(spe=10, start=4, factor=0.5)
  sched = optim.learning_rate_schedule(o, num_train_steps=130)
  for step in range(130):
    epoch = step // 10 + 1  # ptb_word_lm.py: lr_decay = 0.5 ** max(i + 1 - max_epoch, 0).
    np.testing.assert_allclose(float(sched(step)), 0.5 ** max(epoch - 4, 0), rtol=1e-6)
  assert float(sched(39)) == 1.0 and float(sched(40)) == 0.5  # Negative control: it does decay.


def test_sgd_is_plain_sgd_after_clipping():
  o = _step_decay(spe=2, start=1, factor=0.5)
  o.grad_clip = 1.0
  tx, _ = optim.make_optimizer(o, num_train_steps=10)
  params = {"w": jnp.array([1.0, 2.0])}
  state = tx.init(params)
  g = {"w": jnp.array([3.0, 4.0])}  # Norm 5: clipped to norm 1.
  lrs = [1.0, 1.0, 0.5, 0.5, 0.25]
  for lr in lrs:
    updates, state = tx.update(g, state, params)
    np.testing.assert_allclose(updates["w"], -lr * np.array([0.6, 0.8]), rtol=1e-6)
  adam, _ = optim.make_optimizer(base_config().optimizer, num_train_steps=10)
  upd, _ = adam.update(g, adam.init(params), params)
  assert not np.allclose(upd["w"], -np.array([0.6, 0.8]))  # Negative control: adamw differs.


def test_summed_over_time_gradient_equals_scaled_lr_and_clip():
  """ptb_word_lm.py sums the T per-step batch means (gradient T*g): lr 1, clip 5 there is
  lr T, clip 5/T on jaxlm's per-token mean g (configs/ptb.py relies on this)."""
  t = 20
  g = {"w": jnp.array([0.3, -0.1, 0.05])}
  params = {"w": jnp.zeros(3)}
  ref = optax.chain(optax.clip_by_global_norm(5.0), optax.sgd(1.0))
  ours = optax.chain(optax.clip_by_global_norm(5.0 / t), optax.sgd(float(t)))
  for scale in (1.0, 100.0):  # Unclipped and clipped.
    gs = jax.tree.map(lambda x, s=scale: x * s, g)
    u_ref, _ = ref.update(jax.tree.map(lambda x: x * t, gs), ref.init(params))
    u_ours, _ = ours.update(gs, ours.init(params))
    np.testing.assert_allclose(u_ours["w"], u_ref["w"], rtol=1e-6)


def test_step_decay_and_sgd_validated():
  import pytest

  from jaxlm.config import ConfigError, validate
  c = base_config()
  c.optimizer.schedule = "step_decay"
  with pytest.raises(ConfigError, match="steps_per_epoch.*Fix"):
    validate(c, 1)
  c.optimizer.steps_per_epoch = 10
  validate(c, 1)
  c.optimizer.name = "sgdd"
  with pytest.raises(ConfigError, match="optimizer.name.*Fix"):
    validate(c, 1)


def _gpt_params(boxed: bool = False, **model):
  c = base_config()
  for k, v in model.items():
    c.model[k] = v
  m = models.build_model(c.model, vocab_size=300, seq_len=16)
  params = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
  return params if boxed else nn.meta.unbox(params)


def test_muon_takes_the_block_matrices_and_leaves_the_rest_to_adamw():
  is_dims = lambda x: x is None or hasattr(x, "reduction_axis")
  for fused in (True, False):
    dims = optim.muon_dimensions(_gpt_params(fused_qkv=fused))
    flat = {jax.tree_util.keystr(p): d for p, d in jax.tree_util.tree_flatten_with_path(
        dims, is_leaf=is_dims)[0]}
    muon = {k for k, d in flat.items() if d is not None}
    assert muon and all("['stack']" in k and k.endswith("['kernel']") for k in muon)
    assert all(flat[k] is None for k in flat if "embed" in k or "norm" in k or "bias" in k)
    out = next(d for k, d in flat.items() if "['out']['kernel']" in k)
    assert tuple(out.reduction_axis) == (0, 1) and tuple(out.output_axis) == (2,)  # [H, Dh, D]
    # The Run's optimizer sees boxed (logically partitioned) params: the same view.
    assert jax.tree.leaves(nn.meta.unbox(optim.muon_dimensions(_gpt_params(
        boxed=True, fused_qkv=fused))), is_leaf=is_dims) == jax.tree.leaves(dims, is_leaf=is_dims)
    if fused:  # [D, 3, H, Dh]: q, k and v apart.
      qkv = next(d for k, d in flat.items() if "['qkv']['kernel']" in k)
      assert tuple(qkv.reduction_axis) == (0,) and tuple(qkv.output_axis) == (2, 3)


def test_muon_orthogonalizes_matrix_updates_and_adams_the_embeddings():
  o = base_config().optimizer
  o.name, o.warmup_steps, o.grad_clip, o.learning_rate, o.muon_learning_rate = \
      "muon", 0, 0.0, 1e-3, 0.02
  tx, _ = optim.make_optimizer(o, num_train_steps=100)
  rng = np.random.default_rng(0)
  w = {"stack": {"layer_0": {"mlp": {"wi": {"kernel": jnp.zeros((32, 64))}}}},
       "embed": {"embedding": jnp.zeros((50, 32))}}
  # A gradient with very unequal singular values.
  u, _ = np.linalg.qr(rng.normal(size=(32, 32)))
  g_mat = (u * np.logspace(0, 1.5, 32)) @ rng.normal(size=(32, 64)) / 8
  g = {"stack": {"layer_0": {"mlp": {"wi": {"kernel": jnp.asarray(g_mat, jnp.float32)}}}},
       "embed": {"embedding": jnp.asarray(rng.normal(size=(50, 32)), jnp.float32)}}
  upd, _ = tx.update(g, tx.init(w), w)
  sv = np.linalg.svd(np.asarray(upd["stack"]["layer_0"]["mlp"]["wi"]["kernel"]), compute_uv=False)
  assert sv.max() / sv.min() < 3  # Newton-Schulz: near-equal singular values...
  raw = np.linalg.svd(g_mat, compute_uv=False)
  assert raw.max() / raw.min() > 20  # ...where the gradient's spread (negative control).
  # The embedding: (Nesterov) Adam's first step, a sign step of one size for every entry
  # (m / sqrt(v) = g / |g|), about the AdamW learning rate.
  e = np.asarray(upd["embed"]["embedding"])
  np.testing.assert_array_equal(np.sign(e), -np.sign(g["embed"]["embedding"]))
  np.testing.assert_allclose(np.abs(e), np.abs(e).max(), rtol=1e-4)
  assert 1e-3 <= np.abs(e).max() < 2e-3


def test_muon_trains_a_sharded_gpt_and_is_refused_elsewhere(tmp_path, text_file, data_dir):
  import pytest
  from conftest import metric_by_step, tiny_config

  from jaxlm import train
  from jaxlm.config import ConfigError, validate

  c = tiny_config(text_file, data_dir, **{"optimizer.name": "muon", "num_train_steps": 8,
                                          "mesh.shape": (2, 2, 2), "eval_every_steps": 8,
                                          "checkpoint_every_steps": 8})
  train.train_and_evaluate(c, str(tmp_path / "w"))  # Born-sharded init of muon's state.
  loss = metric_by_step(str(tmp_path / "w"), "train_loss")
  assert loss[8] < loss[1] - 0.2, loss
  lstm = tiny_config(text_file, data_dir, **{"optimizer.name": "muon", "model.family": "lstm"})
  with pytest.raises(ConfigError, match="muon.*Fix"):
    validate(lstm, 1)
  c.optimizer.muon_beta = 1.0
  with pytest.raises(ConfigError, match="muon_beta.*Fix"):
    validate(c, 8)


def test_batched_muon_equals_optax_muon_split_over_the_data_axis():
  """jaxlm.muon stacks same-shaped matrices (q/k/v and out [128, 128] x 16, the MLP's x 8) and
  splits each stack over the data axis: the updates are optax.contrib.muon's; four
  Newton-Schulz iterations instead of five are not (negative control)."""
  from jaxlm import muon, sharding

  rng = np.random.default_rng(0)
  draw = lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  params = jax.tree.map(lambda x: 0.1 * draw(x), _gpt_params(fused_qkv=True))
  grads = [jax.tree.map(draw, params) for _ in range(3)]
  sched = optax.linear_schedule(1e-3, 1e-4, 10)
  muon_lr = lambda step: sched(step) * 20
  ref = optax.contrib.muon(muon_lr, beta=0.95, weight_decay=0.1, adam_learning_rate=sched,
                           adam_b2=0.99, adam_eps_root=0.0,
                           muon_weight_dimension_numbers=optim.muon_dimensions)
  ours, fewer = (muon.muon(muon_lr, sched, optim.muon_dimensions, beta=0.95, weight_decay=0.1,
                           adam_b2=0.99, ns_steps=n) for n in (5, 4))
  mesh = sharding.make_mesh((8, 1, 1))

  def run(tx):
    step = jax.jit(tx.update)
    state, p, out = tx.init(params), params, []
    with jax.set_mesh(mesh):
      for g in grads:
        u, state = step(g, state, p)
        p = optax.apply_updates(p, u)
        out.append(u)
      hlo = step.lower(grads[0], state, p).compile().as_text()
    return out, hlo

  (want, _), (got, hlo), (wrong, _) = run(ref), run(ours), run(fewer)
  assert jax.tree.structure(ref.init(params)) == jax.tree.structure(ours.init(params))
  err = lambda a, b: max(float(jnp.max(jnp.abs(x - y))) for x, y in
                         zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(want[0]))
  assert all(err(w, g) < 1e-5 * scale for w, g in zip(want, got, strict=True))
  assert err(want[0], wrong[0]) > 1e-2 * scale
  assert "all-gather" in hlo  # Each device orthogonalized its share of each stack.
