"""KV-cache generation: equal to the full forward pass, deterministic, bucketed, sharded."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import inference, sharding
from jaxlm.config import DEFAULT_RULES
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.generate import Generator, sample_logits
from jaxlm.layers.transformer import TransformerConfig
from jaxlm.models import TransformerLM

TOK = ByteTokenizer()


def _model(position="learned", seed=0, **kw):
  cfg = TransformerConfig(vocab_size=TOK.vocab_size, num_layers=2, num_heads=4, emb_dim=32,
                          mlp_dim=64, max_len=64, position=position, **kw)
  model = TransformerLM(cfg)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))["params"]
  return model, jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, params,
                             is_leaf=lambda x: hasattr(x, "value"))


def _prompts(lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(7, TOK.vocab_size, n)) for n in lengths]


VARIANTS = {
    "learned": dict(position="learned"),
    "sinusoidal": dict(position="sinusoidal"),
    "rope": dict(position="rope"),
    "alibi": dict(position="alibi"),
    "none": dict(position="none"),
    "rope_gqa": dict(position="rope", num_kv_heads=2),
    "alibi_mqa_scan": dict(position="alibi", num_kv_heads=1, scan_layers=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cached_logits_equal_full_forward_every_step(variant):
  model, params = _model(**VARIANTS[variant])
  gen = Generator(model, params, TOK)
  prompts = _prompts([5, 13, 1])  # Left-padded to 16 in one batch.
  outs = gen.generate_ids(prompts, max_new_tokens=6, temperature=0.0, return_logits=True)
  # Reference: one full forward pass over each row's prompt + generated tokens (right-padded
  # to one shape; causal, so the padding does not change the logits before it).
  seqs = [p + c.ids for p, c in zip(prompts, outs, strict=True)]
  batch = np.zeros((len(seqs), max(map(len, seqs))), np.int32)
  for r, s in enumerate(seqs):
    batch[r, :len(s)] = s
  full = np.asarray(model.apply({"params": params}, jnp.asarray(batch)))
  for r, (p, c) in enumerate(zip(prompts, outs, strict=True)):
    steps = len(c.logits)
    assert 1 <= steps and len(c.ids) <= 6
    want = full[r, len(p) - 1:len(p) - 1 + steps]
    np.testing.assert_allclose(c.logits, want, atol=2e-4, rtol=1e-4)
    assert list(np.argmax(c.logits[:len(c.ids)], -1)) == c.ids  # Greedy picks the argmax.


def test_uncached_generator_gives_the_same_tokens():
  model, params = _model("rope", num_kv_heads=2)
  prompts = _prompts([3, 9])
  kw = dict(max_new_tokens=6, temperature=0.0)
  cached = Generator(model, params, TOK).generate_ids(prompts, **kw)
  uncached = Generator(model, params, TOK, cached=False).generate_ids(prompts, **kw)
  assert [c.ids for c in cached] == [c.ids for c in uncached]


def test_greedy_is_deterministic_and_batch_independent():
  model, params = _model("learned")
  gen = Generator(model, params, TOK)
  prompts = ["Hello", "a much longer prompt than that", ""]
  a = gen.generate(prompts, max_new_tokens=8, temperature=0.0)
  b = gen.generate(prompts, max_new_tokens=8, temperature=0.0, seed=123)
  assert [c.ids for c in a] == [c.ids for c in b]
  alone = gen.generate([prompts[1]], max_new_tokens=8, temperature=0.0)
  assert alone[0].ids == a[1].ids
  # Same seed -> same samples; another seed -> (almost surely) different ones.
  s1 = gen.generate(prompts, max_new_tokens=16, temperature=1.0, seed=1)
  s2 = gen.generate(prompts, max_new_tokens=16, temperature=1.0, seed=1)
  s3 = gen.generate(prompts, max_new_tokens=16, temperature=1.0, seed=2)
  assert [c.ids for c in s1] == [c.ids for c in s2] != [c.ids for c in s3]


def test_one_compilation_per_bucket():
  model, params = _model("rope")
  gen = Generator(model, params, TOK)
  gen.generate(["ab"], max_new_tokens=5, temperature=0.0)
  traces = gen.traces
  assert traces == 2  # prefill + decode loop
  gen.generate(["a longer one"], max_new_tokens=7, temperature=0.7, top_k=5, top_p=0.9, seed=3)
  assert gen.traces == traces  # Same buckets, options are traced values: no recompilation.
  gen.generate(["x"] * 3, max_new_tokens=5, temperature=0.0)
  assert gen.traces == traces + 2  # A new batch bucket compiles once more.


def test_stops_at_eos_stop_string_and_length():
  model, params = _model("learned")
  full = Generator(model, params, TOK).generate(["The "], max_new_tokens=12, temperature=0.0)[0]
  assert full.finish_reason == "length" and len(full.ids) == 12
  tok = ByteTokenizer()
  tok.eos_id = full.ids[4]  # Pretend the 5th generated token is EOS.
  first = full.ids.index(tok.eos_id)
  eos = Generator(model, params, tok).generate(["The "], max_new_tokens=12, temperature=0.0)[0]
  assert eos.finish_reason == "eos" and eos.ids == full.ids[:first]
  stop = full.text[6:8]
  cut = Generator(model, params, TOK).generate(["The "], max_new_tokens=12, temperature=0.0,
                                               stop=[stop])[0]
  assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.find(stop)]
  assert cut.ids == full.ids[:len(cut.ids)] and stop in TOK.decode(cut.ids)


def test_context_limit_is_a_clear_error():
  model, params = _model("learned")
  with pytest.raises(ValueError, match="max_new_tokens=60 exceeds the model's context of 64"):
    Generator(model, params, TOK).generate(["x" * 10], max_new_tokens=60)


def test_sharded_generation_equals_single_device():
  model, params = _model("rope", num_kv_heads=2)
  prompts = ["one", "two prompts", "three", "four!"]
  want = Generator(model, params, TOK).generate(prompts, max_new_tokens=6, temperature=0.0)
  mesh = sharding.make_mesh((2, 2, 2), jax.devices()[:8])
  rules = sharding.rules_tuple(DEFAULT_RULES)
  _, shardings = inference.abstract_params(model, mesh, rules)
  sharded = jax.device_put(params, shardings)
  got = Generator(model, sharded, TOK, mesh, rules).generate(prompts, max_new_tokens=6,
                                                             temperature=0.0)
  assert [c.ids for c in got] == [c.ids for c in want]


def _draws(logits, n=4000, **kw):
  keys = jax.random.split(jax.random.key(0), n)
  return np.asarray(jax.vmap(lambda k: sample_logits(logits[None], k, **kw)[0])(keys))


def test_top_k_and_top_p_never_sample_outside_their_sets():
  logits = jnp.asarray(np.random.default_rng(0).normal(size=50) * 2, jnp.float32)
  order = np.argsort(-np.asarray(logits))
  for k in (1, 3, 10):
    draws = _draws(logits, temperature=1.0, top_k=k)
    assert set(draws) == set(order[:k])  # Inside the set, and every member is reachable.
  probs = np.asarray(jax.nn.softmax(logits))[order]
  for p in (0.3, 0.6, 0.9):
    size = int(np.searchsorted(np.cumsum(probs), p) + 1)  # Smallest prefix with mass >= p.
    draws = _draws(logits, temperature=1.0, top_p=p)
    assert set(draws) <= set(order[:size]) and len(set(draws)) >= min(size, 2)
  both = _draws(logits, temperature=1.0, top_k=4, top_p=0.9)
  assert set(both) <= set(order[:4])
  # Frequencies follow the renormalized distribution (chi-square-like bound).
  draws = _draws(logits, n=8000, temperature=1.0, top_k=3)
  want = probs[:3] / probs[:3].sum()
  got = np.array([(draws == i).mean() for i in order[:3]])
  np.testing.assert_allclose(got, want, atol=0.03)
  assert (_draws(logits, n=50, temperature=0.0) == order[0]).all()


def test_decode_config_is_not_mutated():
  model, params = _model("rope")
  gen = Generator(model, params, TOK)
  assert not gen.model.cfg.decode and dataclasses.replace(model.cfg) == model.cfg
