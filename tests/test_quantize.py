"""int8 weight-only quantization: per-channel error bound, generator use, files, report."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from inference_helpers import random_workdir

from jaxlm import quantize
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.generate import Generator
from jaxlm.layers.transformer import TransformerConfig
from jaxlm.models import TransformerLM


def _model(**kw):
  cfg = TransformerConfig(vocab_size=ByteTokenizer().vocab_size, num_layers=2, num_heads=4,
                          emb_dim=32, mlp_dim=64, max_len=32, **kw)
  model = TransformerLM(cfg)
  return model, nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
                              ["params"])


def test_per_channel_scales_and_error_bound():
  _, params = _model()
  q = quantize.quantize_params(params)
  attn = q["stack"]["layer_0"]["attn"]
  assert attn["query"]["kernel"].scale.shape == (1, 4, 8)  # [D, H, E]: one per (head, dim).
  assert attn["out"]["kernel"].scale.shape == (1, 1, 32)  # [H, E, D]: one per output dim.
  assert q["stack"]["layer_0"]["mlp"]["wi"]["kernel"].scale.shape == (1, 64)
  assert q["embed"]["embedding"].scale.shape == (384, 1)  # One per vocab row.
  assert q["pos"]["pos_embedding"].q.dtype == jnp.int8
  assert not isinstance(q["stack"]["layer_0"]["attn"]["query"]["bias"], quantize.QArray)
  fused = quantize.quantize_params(_model(fused_qkv=True)[1])["stack"]["layer_0"]["attn"]
  assert fused["qkv"]["kernel"].scale.shape == (1, 3, 4, 8)  # [D, 3, H, E]: per (q/k/v, head, dim).
  assert not isinstance(q["final_norm"]["scale"], quantize.QArray)
  for orig, qa in [(params["stack"]["layer_1"]["attn"]["out"]["kernel"],
                    q["stack"]["layer_1"]["attn"]["out"]["kernel"]),
                   (params["embed"]["embedding"], q["embed"]["embedding"])]:
    err = np.abs(np.asarray(qa.dequantize()) - np.asarray(orig))
    assert (err <= np.asarray(qa.scale) / 2 + 1e-7).all()
    assert np.abs(np.asarray(qa.q)).max() == 127  # The range is used.


def test_generator_runs_on_int8_weights():
  model, params = _model(position="rope", scan_layers=True)
  q = quantize.quantize_params(params)
  ids = jnp.asarray(np.random.default_rng(0).integers(7, 263, (2, 16)))
  full = model.apply({"params": params}, ids)
  approx = model.apply({"params": quantize.dequantize(q)}, ids)
  rel = float(jnp.linalg.norm(full - approx) / jnp.linalg.norm(full))
  assert 0 < rel < 0.02, rel
  tok = ByteTokenizer()
  got = Generator(model, q, tok).generate(["Hello"], max_new_tokens=8, temperature=0.0)
  want = Generator(model, quantize.dequantize(q), tok).generate(["Hello"], max_new_tokens=8,
                                                               temperature=0.0)
  assert got[0].ids == want[0].ids and len(got[0].ids) > 0


def test_safetensors_roundtrip_is_about_a_quarter_the_size(tmp_path):
  _, params = _model()
  q = quantize.quantize_params(params)
  n_int8 = quantize.save(q, str(tmp_path / "q.safetensors"))
  n_float = quantize.save(params, str(tmp_path / "f.safetensors"))
  assert n_int8 < 0.35 * n_float
  back = quantize.load(str(tmp_path / "q.safetensors"))
  for a, b in zip(jax.tree.leaves(quantize.dequantize(q)),
                  jax.tree.leaves(quantize.dequantize(back)), strict=True):
    np.testing.assert_array_equal(a, b)


def test_report_on_a_workdir(tmp_path, text_file, data_dir):
  wd = random_workdir(str(tmp_path / "wd"), text_file, data_dir)
  rep = quantize.report(wd, eval_batches=2)
  assert os.path.exists(os.path.join(wd, "int8", "model.safetensors"))
  assert json.load(open(os.path.join(wd, "int8", "report.json")))["int8_bytes"] == \
      rep["int8_bytes"]
  assert rep["size_ratio"] < 0.5 and rep["eval_tokens"] > 0
  assert abs(rep["int8"]["loss"] - rep["float"]["loss"]) < 0.05
  assert rep["int8"]["loss"] != rep["float"]["loss"]  # The quantized model really was evaluated.
