"""Transformer ablation switches: causality of every causal variant, GQA/MHA, RoPE, mesh runs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config

from jaxlm import models, train
from jaxlm.config import base_config
from jaxlm.layers.attention import Attention
from jaxlm.layers.embeddings import apply_rope

# Every switch value appears at least once (a few share a model, to keep tests fast).
CAUSAL_VARIANTS = [
    dict(position="none", attention="bilinear"),
    dict(position="learned", norm="rmsnorm", norm_position="post"),
    dict(position="sinusoidal", mlp="swiglu", tie_embeddings=False),
    dict(position="rope", num_kv_heads=2),  # GQA
    dict(position="alibi", num_kv_heads=1),  # MQA
    dict(position="rope", sliding_window=4),
    dict(position="alibi", sliding_window=3, scan_layers=True, remat="dots_saveable"),
    dict(position="learned", remat="full", fused_qkv=True, mlp="relu2"),
    dict(position="rope", fused_qkv=True, scan_layers=True, mlp="relu"),
    dict(dropout=0.2, attention_dropout=0.2),  # Checked in training mode (dropout on).
]


def _ids(v):
  return "-".join(f"{k}={x}" for k, x in v.items())


def _model(family="gpt", **kw):
  c = base_config()
  c.model.family = family
  c.model.num_layers, c.model.num_heads, c.model.emb_dim, c.model.mlp_dim = 2, 4, 32, 64
  for k, v in kw.items():
    c.model[k] = v
  return models.build_model(c.model, vocab_size=50, seq_len=16)


def _input_grads(model, t=7, train_mode=False):
  """d logits[:, t] / d token embeddings, per position (zero after t iff causal)."""
  ids = jax.random.randint(jax.random.key(1), (2, 16), 7, 50)
  params = model.init(jax.random.key(0), ids)["params"]

  def logits_at_t(emb_delta):
    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.module.name == "embed" and context.method_name == "__call__":
        out = out + emb_delta
      return out

    with nn.intercept_methods(add_delta):
      logits = model.apply({"params": params}, ids, deterministic=not train_mode,
                           rngs={"dropout": jax.random.key(3)})
    return logits[:, t].sum()

  return jax.grad(logits_at_t)(jnp.zeros((2, 16, 32)))


@pytest.mark.parametrize("variant", CAUSAL_VARIANTS, ids=_ids)
def test_every_causal_variant_is_causal(variant):
  grads = _input_grads(_model(**variant), train_mode="dropout" in variant)
  assert float(jnp.abs(grads[:, 8:]).max()) == 0.0
  assert float(jnp.abs(grads[:, :8]).max()) > 0.0


@pytest.mark.parametrize("variant", [dict(position="learned"), dict(position="rope",
                                                                    sliding_window=4)], ids=_ids)
def test_bert_sees_the_future(variant):
  grads = _input_grads(_model("bert", **variant))
  # Bidirectional: future positions within reach (window) have a gradient.
  assert float(jnp.abs(grads[:, 8:10]).max()) > 0.0
  if "sliding_window" in variant:
    # ... and nothing beyond 2 layers x (window - 1) positions.
    assert float(jnp.abs(grads[:, 14:]).max()) == 0.0


@pytest.mark.parametrize("manual", [False, True], ids=["fused", "einsum"])
def test_gqa_equals_mha_with_the_same_weights(manual):
  x = jax.random.normal(jax.random.key(0), (2, 10, 32))
  pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
  kw = dict(num_heads=4, head_dim=8, position="rope", sow_weights=manual)
  mha = Attention(**kw)
  p_mha = nn.meta.unbox(mha.init(jax.random.key(1), x, pos)["params"])
  # num_kv_heads == num_heads is MHA exactly.
  y_mha = mha.apply({"params": p_mha}, x, pos, mutable=["intermediates"])[0]
  y_eq = Attention(num_kv_heads=4, **kw).apply({"params": p_mha}, x, pos,
                                               mutable=["intermediates"])[0]
  np.testing.assert_array_equal(np.asarray(y_mha), np.asarray(y_eq))
  # GQA with 2 KV heads equals MHA whose K/V heads are the GQA heads, each repeated per group.
  gqa = Attention(num_kv_heads=2, **kw)
  p_gqa = nn.meta.unbox(gqa.init(jax.random.key(2), x, pos)["params"])
  p_rep = jax.tree.map(lambda a: a, p_gqa)
  for name in ("key", "value"):
    p_rep[name] = {k: jnp.repeat(v, 2, axis=1 if k == "kernel" else 0)
                   for k, v in p_gqa[name].items()}
  y_gqa = gqa.apply({"params": p_gqa}, x, pos, mutable=["intermediates"])[0]
  y_rep = mha.apply({"params": p_rep}, x, pos, mutable=["intermediates"])[0]
  np.testing.assert_allclose(y_gqa, y_rep, rtol=1e-5, atol=1e-6)


def test_fused_qkv_equals_separate_projections_with_the_same_weights():
  x = jax.random.normal(jax.random.key(0), (2, 10, 32))
  pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
  kw = dict(num_heads=4, head_dim=8, position="rope")
  sep = Attention(**kw)
  p = nn.meta.unbox(sep.init(jax.random.key(1), x, pos)["params"])
  fused = Attention(fused_qkv=True, **kw)
  shapes = jax.tree.map(jnp.shape, nn.meta.unbox(fused.init(jax.random.key(1), x, pos)["params"]))
  assert set(shapes) == {"qkv", "out"} and shapes["qkv"]["kernel"] == (32, 3, 4, 8)
  names = ("query", "key", "value")
  p_fused = {"out": p["out"], "qkv": {
      "kernel": jnp.stack([p[n]["kernel"] for n in names], axis=1),
      "bias": jnp.stack([p[n]["bias"] for n in names], axis=0)}}
  np.testing.assert_allclose(fused.apply({"params": p_fused}, x, pos),
                             sep.apply({"params": p}, x, pos), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="fused_qkv needs num_kv_heads"):
    Attention(fused_qkv=True, num_kv_heads=2, **kw).init(jax.random.key(1), x, pos)


def test_rope_scores_depend_only_on_relative_position():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

  def score(m, n):
    rq = apply_rope(q, jnp.array([[m]]))
    rk = apply_rope(k, jnp.array([[n]]))
    return float(jnp.sum(rq * rk))

  for m, n, s in [(3, 1, 10), (0, 7, 100), (5, 5, 1000)]:
    np.testing.assert_allclose(score(m, n), score(m + s, n + s), rtol=1e-4, atol=1e-4)
  assert abs(score(3, 1) - score(3, 2)) > 1e-3  # It does depend on the distance.
  # In the model: with RoPE as the only position signal, shifting every position is a no-op.
  model = _model(position="rope")
  ids = jax.random.randint(jax.random.key(1), (2, 16), 7, 50)
  params = model.init(jax.random.key(0), ids)["params"]
  pos = jnp.broadcast_to(jnp.arange(16), (2, 16))
  a = model.apply({"params": params}, ids, pos)
  b = model.apply({"params": params}, ids, pos + 37)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


ALL_MODELS = CAUSAL_VARIANTS + [dict(family="bert", type_vocab_size=2, position="rope"),
                                dict(family="lstm", tie_embeddings=False),
                                dict(family="lstm", lstm_hidden_dim=48)]


def test_every_variant_names_the_axes_of_every_parameter():
  for variant in ALL_MODELS:
    model = _model(**{"attention": "bilinear", **variant})
    boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
    leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves, variant
    for leaf in leaves:
      assert isinstance(leaf, nn.LogicallyPartitioned), (variant, leaf)
      assert len(leaf.names) == leaf.value.ndim, (variant, leaf)


# Combinations covering every switch value, one train step each on the (2, 2, 2) mesh.
MESH_COMBOS = [
    {"model.position": "none", "model.attention": "bilinear", "model.norm_position": "post",
     "model.norm": "rmsnorm", "model.mlp": "swiglu", "model.tie_embeddings": False,
     "model.dropout": 0.1, "model.attention_dropout": 0.1},
    {"model.position": "sinusoidal", "model.num_heads": 4, "model.num_kv_heads": 1,
     "model.sliding_window": 8, "model.scan_layers": True, "model.remat": "dots_saveable"},
    {"model.position": "alibi", "model.num_heads": 4, "model.num_kv_heads": 2,
     "model.remat": "full"},
    {"model.family": "bert", "model.position": "rope", "model.sliding_window": 8,
     "model.type_vocab_size": 2, "model.scan_layers": True},
]


@pytest.mark.parametrize("overrides", MESH_COMBOS, ids=lambda o: o.get("model.position"))
def test_variants_train_on_the_8_device_mesh(text_file, data_dir, overrides):
  assert jax.device_count() == 8
  c = tiny_config(text_file, data_dir, **overrides, **{"mesh.shape": (2, 2, 2),
                                                       "optimizer.warmup_steps": 0})
  run = train.Run(c, None)
  state = run.init_state()
  rng = np.random.default_rng(0)
  tokens = rng.integers(7, 200, (8, 33)).astype(np.int32)
  batch = {"tokens": tokens, "segment_ids": np.ones_like(tokens),
           "positions": np.tile(np.arange(33, dtype=np.int32), (8, 1))}
  step = run.jit_train_step()
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    state, m1 = step(state, run.to_global(batch))
    state, m2 = step(state, run.to_global(batch))
  emb = state.params["embed"]["embedding"]
  assert emb.addressable_shards[0].data.shape == (emb.shape[0] // 2, emb.shape[1] // 2)
  assert 3.0 < float(m1["train_loss"]) < 8.0  # About ln(263) at init (byte vocab).
  if c.model.family == "gpt":  # (bert masks other tokens at step 2: not comparable)
    assert float(m2["train_loss"]) < float(m1["train_loss"])
