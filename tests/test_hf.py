"""Hugging Face GPT-2 interchange: equal logits both ways; plain safetensors params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxlm import hf
from jaxlm.layers.transformer import TransformerConfig
from jaxlm.models import TransformerLM


def _hf_libs():
  """(torch, transformers), or a skip naming the missing package."""
  why = "not installed (pip install -e '.[hf]')"
  return (pytest.importorskip("torch", reason="torch " + why),
          pytest.importorskip("transformers", reason="transformers " + why))


def _perturb(params, seed=0):
  """Random values everywhere (biases and norm scales too), so every mapping is exercised."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                   for x, k in zip(leaves, keys, strict=True)])


def _ids(vocab, shape=(2, 12)):
  return np.random.default_rng(0).integers(0, vocab, shape)


def test_jaxlm_to_hf_gives_equal_logits(tmp_path):
  torch, transformers = _hf_libs()
  cfg = TransformerConfig(vocab_size=263, vocab_multiple=128, num_layers=2, num_heads=4,
                          emb_dim=32, mlp_dim=96, max_len=16)
  model = TransformerLM(cfg)
  params = nn_unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = _perturb(params)
  hf.save_hf(params, cfg, str(tmp_path))
  ref = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
  ids = _ids(cfg.vocab_size)
  with torch.no_grad():
    want = ref(torch.tensor(ids)).logits.numpy()
  got = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
  assert want.shape[-1] == 263 and got.shape[-1] == 384  # Padding rows are not exported.
  np.testing.assert_allclose(got[..., :263], want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tied", [True, False])
def test_hf_to_jaxlm_gives_equal_logits(tmp_path, tied):
  torch, transformers = _hf_libs()
  torch.manual_seed(0)
  config = transformers.GPT2Config(vocab_size=100, n_positions=16, n_embd=32, n_layer=2,
                                   n_head=4, tie_word_embeddings=tied)
  ref = transformers.GPT2LMHeadModel(config).eval()
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(0.1 * torch.randn_like(p))
  ref.save_pretrained(str(tmp_path), safe_serialization=True)
  cfg, params = hf.load_hf(str(tmp_path))
  assert cfg.norm_eps == 1e-5 and cfg.padded_vocab == 100 and cfg.tie_embeddings == tied
  ids = _ids(100)
  with torch.no_grad():
    want = ref(torch.tensor(ids)).logits.numpy()
  got = np.asarray(TransformerLM(cfg).apply({"params": params}, jnp.asarray(ids)))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  # And back: the re-exported tensors equal HF's own.
  if tied:
    _, tensors = hf.to_hf(params, cfg)
    theirs = load_file(str(tmp_path / "model.safetensors"))
    for k, v in tensors.items():
      np.testing.assert_array_equal(v, theirs[k])


def nn_unbox(tree):
  import flax.linen as nn
  return nn.meta.unbox(tree)


def test_incompatible_model_is_refused_naming_fields():
  cfg = TransformerConfig(vocab_size=50, position="rope", mlp="swiglu", num_kv_heads=2)
  with pytest.raises(ValueError, match="model.position='rope'.*model.mlp='swiglu'"):
    hf.to_hf({}, cfg)


def test_fused_qkv_exports_the_same_c_attn():
  kw = dict(vocab_size=50, num_layers=1, num_heads=2, emb_dim=16, mlp_dim=32)
  ids = jnp.zeros((1, 4), jnp.int32)
  params = nn_unbox(TransformerLM(TransformerConfig(**kw)).init(jax.random.key(0), ids)["params"])
  attn = params["stack"]["layer_0"]["attn"]
  names = ("query", "key", "value")
  fused = jax.tree.map(lambda x: x, params)
  fused["stack"]["layer_0"]["attn"] = {"out": attn["out"], "qkv": {
      "kernel": jnp.stack([attn[n]["kernel"] for n in names], axis=1),
      "bias": jnp.stack([attn[n]["bias"] for n in names], axis=0)}}
  _, want = hf.to_hf(params, TransformerConfig(**kw))
  _, got = hf.to_hf(fused, TransformerConfig(fused_qkv=True, **kw))
  assert want.keys() == got.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_plain_safetensors_params(tmp_path):
  cfg = TransformerConfig(vocab_size=50, num_layers=1, num_heads=2, emb_dim=16, mlp_dim=32,
                          position="rope")
  params = nn_unbox(TransformerLM(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
                    ["params"])
  hf.save_params(params, str(tmp_path / "p.safetensors"))
  flat = load_file(str(tmp_path / "p.safetensors"))
  np.testing.assert_array_equal(flat["stack/layer_0/attn/query/kernel"],
                                params["stack"]["layer_0"]["attn"]["query"]["kernel"])
  assert len(flat) == len(jax.tree.leaves(params))
