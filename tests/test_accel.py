"""The accelerator path, tested on CPU: mixed precision, fused attention, remat, scan,
donation, asynchronous host metrics, prefetch to device (grad accumulation: test_sharding)."""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxlm import models, train
from jaxlm.config import base_config
from jaxlm.data import pipeline
from jaxlm.layers.attention import Attention


def _batch(seq_len=32, batch=8, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(7, 200, (batch, seq_len + 1)).astype(np.int32)
  return {"tokens": tokens, "segment_ids": np.ones_like(tokens),
          "positions": np.tile(np.arange(seq_len + 1, dtype=np.int32), (batch, 1))}


def test_bf16_compute_with_fp32_master_weights(text_file, data_dir):
  out = {}
  for dt in ("float32", "bfloat16"):
    run = train.Run(tiny_config(text_file, data_dir, **{"model.dtype": dt}), None,
                    devices=jax.devices()[:1])
    state = run.init_state()
    with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
      state, m = run.jit_train_step()(state, run.to_global(_batch()))
      ids = jnp.asarray(_batch()["tokens"][:, :-1])
      logits, inter = run.model.apply({"params": state.params}, ids,
                                      capture_intermediates=True)
    out[dt] = float(m["train_loss"])
    # Master weights and optimizer moments stay float32 after the update.
    assert {x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
    block_out = inter["intermediates"]["stack"]["layer_0"]["__call__"][0]
    assert block_out.dtype == jnp.dtype(dt)  # Activations in the compute dtype.
    assert logits.dtype == jnp.float32  # The loss is taken in float32.
  assert out["bfloat16"] == pytest.approx(out["float32"], rel=2e-2)
  assert out["bfloat16"] != out["float32"]  # bf16 really computed something different.


@pytest.mark.parametrize("kw", [dict(), dict(num_kv_heads=2, position="rope"),
                                dict(sliding_window=5, position="alibi")])
def test_dot_product_attention_equals_einsum_path(kw):
  x = jax.random.normal(jax.random.key(0), (2, 12, 32))
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  seg = jnp.array([[1] * 7 + [2] * 5, [1] * 9 + [0] * 3])  # Two documents; padding.
  fused = Attention(num_heads=4, head_dim=8, implementation="xla", **kw)
  params = fused.init(jax.random.key(1), x, pos, seg)
  y_fused = fused.apply(params, x, pos, seg)
  y_einsum, _ = Attention(num_heads=4, head_dim=8, sow_weights=True, **kw).apply(
      params, x, pos, seg, mutable=["intermediates"])
  valid = (seg != 0)[..., None]  # Padding rows are don't-care.
  np.testing.assert_allclose(y_fused * valid, y_einsum * valid, atol=2e-5)
  # implementation='einsum' (the CPU default): the same outputs and parameter gradients.
  einsum = Attention(num_heads=4, head_dim=8, implementation="einsum", **kw)
  loss = lambda m, p, w: jnp.sum(m.apply(p, x, pos, seg) * valid * w)
  w = jax.random.normal(jax.random.key(2), y_fused.shape)
  g_fused, g_einsum, g_other = (jax.grad(lambda p, m=m, w=w: loss(m, p, w))(params)
                                for m, w in ((fused, w), (einsum, w), (einsum, -w)))
  close = lambda a, b: all(np.allclose(u, v, atol=2e-5) for u, v in zip(
      jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
  assert close(g_fused, g_einsum)
  assert not close(g_fused, g_other)  # Negative control: another loss's gradients.


@pytest.mark.parametrize("scan", [False, True])
def test_remat_policies_give_the_same_gradients(scan):
  ids = jax.random.randint(jax.random.key(1), (2, 16), 7, 50)
  grads = {}
  for remat in ("none", "full", "dots_saveable"):
    c = base_config()
    c.model.num_layers, c.model.emb_dim, c.model.mlp_dim = 2, 32, 64
    c.model.remat, c.model.scan_layers = remat, scan
    model = models.build_model(c.model, vocab_size=50, seq_len=16)
    params = nn.meta.unbox(model.init(jax.random.key(0), ids)["params"])
    # The real vocabulary's logits (the padding columns sit at -1e9, for the softmax).
    loss = lambda p, model=model: jnp.mean(model.apply({"params": p}, ids)[..., :50] ** 2)
    grads[remat] = jax.jit(jax.grad(loss))(params)
  if scan:  # One stacked parameter per kind, with a leading layers axis.
    assert grads["none"]["stack"]["layers"]["mlp"]["wi"]["kernel"].shape[0] == 2
  for remat in ("full", "dots_saveable"):
    for a, b in zip(jax.tree.leaves(grads["none"]), jax.tree.leaves(grads[remat]), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_train_step_donates_the_old_state(text_file, data_dir):
  run = train.Run(tiny_config(text_file, data_dir), None, devices=jax.devices()[:1])
  state = run.init_state()
  old = jax.tree.leaves(state)
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    new, _ = run.jit_train_step()(state, run.to_global(_batch()))
  jax.block_until_ready(new)
  assert all(x.is_deleted() for x in old)  # Updated in place: no second copy of the state.


def test_loop_dispatches_the_next_step_before_reading_metrics(tmp_path, text_file, data_dir,
                                                              monkeypatch):
  """Host metrics are asynchronous: step N's metrics are fetched only after step N+1 is queued."""
  c = tiny_config(text_file, data_dir, **{"num_train_steps": 6, "log_every_steps": 100,
                                          "eval_every_steps": 100,
                                          "checkpoint_every_steps": 100})
  events, ids = [], {}
  jit_step = train.Run.jit_train_step

  def traced_jit(self):
    fn = jit_step(self)

    def step(state, batch):
      state, m = fn(state, batch)
      events.append(("dispatch", len(ids) + 1))
      ids[id(m)] = len(ids) + 1
      return state, m
    return step

  device_get = jax.device_get

  def traced_get(x):
    if id(x) in ids:
      events.append(("read", ids[id(x)]))
    return device_get(x)

  monkeypatch.setattr(train.Run, "jit_train_step", traced_jit)
  monkeypatch.setattr(train.jax, "device_get", traced_get)
  train.train_and_evaluate(c, str(tmp_path), jax.devices()[:1])
  reads = [n for kind, n in events if kind == "read"]
  assert sorted(reads) == list(range(1, 7))
  for n in range(1, 6):  # Every step but the last is read after the next one was dispatched.
    assert events.index(("dispatch", n + 1)) < events.index(("read", n))


def test_prefetcher_puts_batches_on_device_ahead(text_file, data_dir):
  c = tiny_config(text_file, data_dir)
  run = train.Run(c, None, devices=jax.devices()[:1])
  it = iter(pipeline.train_dataset(c.data, run.tokenizer, c.seed))
  ref = iter(pipeline.train_dataset(c.data, run.tokenizer, c.seed))
  pre = pipeline.Prefetcher(it, run.to_global, depth=2)
  try:
    for _ in range(3):
      batch, state = next(pre)
      expected = next(ref)
      assert isinstance(batch["tokens"], jax.Array)
      assert batch["tokens"].sharding == run.batch_sharding
      np.testing.assert_array_equal(np.asarray(batch["tokens"]), expected["tokens"])
      assert state == ref.get_state()  # The state after *this* batch, not the prefetched ones.
    deadline = time.time() + 10
    while pre._q.qsize() < 2 and time.time() < deadline:
      time.sleep(0.01)
    assert pre._q.qsize() == 2  # Two batches are waiting on device before they are asked for.
  finally:
    pre.close()
