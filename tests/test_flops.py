"""FLOPs per token (jaxlm/flops.py) against XLA's cost analysis of the compiled train step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from conftest import tiny_config

from jaxlm import flops, train

TOLERANCE = 0.05  # XLA also counts softmax, norms, gates and the optimizer (a few %).


def _xla_flops_per_token(run) -> float:
  state = run.abstract_state
  d = run.config.data
  batch = {k: jax.ShapeDtypeStruct((d.batch_size, d.seq_len + 1), jnp.int32,
                                   sharding=run.batch_sharding)
           for k in ("tokens", "segment_ids", "positions")}
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    compiled = run.jit_train_step().lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) / (d.batch_size * d.seq_len)


def _old_formula(run) -> float:  # What train.flops_per_token computed before (for the control).
  m, c = run.config.model, run.config
  attn = 0 if m.family == "lstm" else m.emb_dim
  return 6.0 * (run.num_non_embedding + run.tokenizer.vocab_size * m.emb_dim) + \
      12.0 * m.num_layers * c.data.seq_len * attn


CASES = {
    "gpt": {"model.emb_dim": 128, "model.mlp_dim": 512, "data.seq_len": 64},
    "bert": {"model.family": "bert", "model.emb_dim": 128, "model.mlp_dim": 512,
             "data.seq_len": 64},
    # Zaremba's small shape on a 5k-word vocabulary; unrolled, since XLA counts a loop body once.
    "lstm": {"model.family": "lstm", "model.emb_dim": 200, "model.tie_embeddings": False,
             "data.seq_len": 20, "model.lstm_unroll": 20, "data.tokenizer": "word",
             "data.doc_unit": "line"},
}


@pytest.fixture(scope="module")
def word_file(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("words") / "words.txt"
  words = [f"w{i}" for i in range(5000)]
  path.write_text("\n".join(" ".join(words[i:i + 50]) for i in range(0, 5000, 50)) + "\n")
  return str(path)


@pytest.mark.parametrize("family", sorted(CASES))
def test_flops_per_token_matches_xla_cost_analysis(family, text_file, word_file, data_dir):
  c = tiny_config(word_file if family == "lstm" else text_file, data_dir,
                  **{"optimizer.name": "sgd", **CASES[family]})
  run = train.Run(c, None, devices=jax.devices()[:1])
  xla = _xla_flops_per_token(run)
  assert abs(run.flops_per_token / xla - 1) < TOLERANCE, (run.flops_per_token, xla)
  if family == "lstm":  # Negative control: the old count (embedding lookup as a matmul) fails.
    assert _old_formula(run) / xla > 1 + TOLERANCE


def test_formula_by_hand():
  from jaxlm.config import base_config
  c = base_config()
  m = c.model
  m.family, m.emb_dim, m.num_layers, m.tie_embeddings = "lstm", 200, 2, False
  from jaxlm import models
  model = models.build_model(c.model, 10_000, 20)
  params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                   jnp.zeros((1, 20), jnp.int32))["params"])
  # 2 layers of [200, 800] + [200, 800] kernels, the untied head [200, 10112].
  want = 6 * (2 * (200 * 800 + 200 * 800) + 200 * 10_112)
  assert flops.flops_per_token(params, c, 10_000) == want
