"""Document-aware packing at the model: no attention across documents, positions restart."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import models, train
from jaxlm.config import base_config
from jaxlm.data import pipeline
from jaxlm.data.tokenizers import EOS_ID


def _model(position: str):
  c = base_config().model
  c.num_layers, c.num_heads, c.emb_dim, c.mlp_dim, c.position = 2, 2, 32, 64, position
  return models.build_model(c, vocab_size=64, seq_len=32)


def _window(docs, length=25):
  stream = grain.MapDataset.source([np.array(d, np.int32) for d in docs]).to_iter_dataset()
  w = next(iter(pipeline.PackIterDataset(stream, length)))
  return {k: v[None] for k, v in w.items()}


def _logits(model, params, batch, document_attention):
  b = train.model_inputs(batch, document_attention)
  return model.apply({"params": params}, b["inputs"], b["positions"], b["segment_ids"])


@pytest.mark.parametrize("position", ["learned", "rope", "alibi"])
def test_no_attention_across_document_boundaries(position):
  rng = np.random.default_rng(0)
  doc = lambda n: list(rng.integers(7, 64, n)) + [EOS_ID]
  a, b, c = doc(6), doc(9), doc(12)
  batch = _window([a, b, c])  # 25 tokens: all of a and b, the start of c.
  seg = batch["segment_ids"][0]
  np.testing.assert_array_equal(seg, [1] * 7 + [2] * 10 + [3] * 8)
  np.testing.assert_array_equal(batch["positions"][0], [*range(7), *range(10), *range(8)])
  model = _model(position)
  params = model.init(jax.random.key(0), jnp.zeros((1, 24), jnp.int32))["params"]
  logits = _logits(model, params, batch, True)[0]
  # Changing document a changes nothing in b or c.
  other = dict(batch, tokens=batch["tokens"].copy())
  other["tokens"][0, :6] = rng.integers(7, 64, 6)
  changed = _logits(model, params, other, True)[0]
  np.testing.assert_allclose(changed[7:], logits[7:], atol=1e-5)
  assert np.abs(np.asarray(changed[:6] - logits[:6])).max() > 1e-3
  # Document b inside the window equals document b alone at the start of a sequence.
  alone = _logits(model, params, _window([b, [EOS_ID] * 20]), True)[0]
  np.testing.assert_allclose(logits[7:17], alone[:10], atol=1e-5)
  # The control: without the flag, b does see a.
  free = _logits(model, params, batch, False)[0]
  free_changed = _logits(model, params, other, False)[0]
  assert np.abs(np.asarray(free_changed[7:] - free[7:])).max() > 1e-3
