"""BERT (masked LM) and LSTM families: masking, bidirectionality, scan vs loop, carried state."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config

from jaxlm import models, objectives, train
from jaxlm.config import ConfigError, base_config
from jaxlm.data import lanes, pipeline
from jaxlm.data.tokenizers import MASK_ID, NUM_SPECIAL, PAD_ID
from jaxlm.layers.lstm import LSTM, LSTMCell


def _model_cfg(family, **kw):
  c = base_config()
  c.model.family = family
  c.model.num_layers, c.model.num_heads, c.model.emb_dim, c.model.mlp_dim = 2, 4, 32, 64
  for k, v in kw.items():
    c.model[k] = v
  return c


# ----------------------------------------------------------------------------- masked LM


def test_mlm_masking_statistics_on_a_large_sample():
  vocab = 300
  tokens = jax.random.randint(jax.random.key(3), (64, 4096), NUM_SPECIAL, vocab)
  tokens = tokens.at[:, -96:].set(PAD_ID)  # Padding is never selected.
  inputs, selected = objectives.mask_tokens(jax.random.key(7), tokens, vocab)
  inputs, selected, tokens = map(np.asarray, (inputs, selected, tokens))
  real = tokens != PAD_ID
  assert not selected[~real].any()
  n = selected.sum()
  assert abs(n / real.sum() - 0.15) < 0.005
  masked = (inputs == MASK_ID) & selected
  kept = (inputs == tokens) & selected
  changed = selected & ~masked & ~kept
  # A random replacement equals the original 1/293 of the time: counted as kept (expected).
  p_same = 1 / (vocab - NUM_SPECIAL)
  assert abs(masked.sum() / n - 0.8) < 0.01
  assert abs(kept.sum() / n - (0.1 + 0.1 * p_same)) < 0.01
  assert abs(changed.sum() / n - 0.1 * (1 - p_same)) < 0.01
  assert (inputs[changed] >= NUM_SPECIAL).all() and (inputs[changed] < vocab).all()
  np.testing.assert_array_equal(inputs[~selected], tokens[~selected])  # Others untouched.


def test_mlm_mask_is_deterministic_per_step_and_differs_between_steps():
  obj = objectives.Objective("masked_lm", vocab_size=100)
  rng = np.random.default_rng(0)
  tokens = rng.integers(NUM_SPECIAL, 100, (4, 65)).astype(np.int32)
  batch = {"tokens": tokens, "segment_ids": np.ones_like(tokens),
           "positions": np.tile(np.arange(65, dtype=np.int32), (4, 1))}
  key = lambda step: jax.random.fold_in(jax.random.key(0), step)
  a, b, c = (obj.inputs(batch, key(s), False) for s in (5, 5, 6))
  np.testing.assert_array_equal(a["inputs"], b["inputs"])
  assert (np.asarray(a["weights"]) != np.asarray(c["weights"])).any()
  np.testing.assert_array_equal(a["targets"], tokens[:, :-1])  # Targets are the originals.


def test_bert_is_bidirectional_and_ignores_padding():
  model = models.build_model(_model_cfg("bert").model, vocab_size=50, seq_len=16)
  assert not model.cfg.causal
  ids = jax.random.randint(jax.random.key(1), (2, 16), 7, 50)
  seg = jnp.ones_like(ids).at[:, 12:].set(0)  # Last 4 tokens are padding.
  params = model.init(jax.random.key(0), ids)["params"]
  t = 3

  def logits_at_t(ids):
    out = model.apply({"params": params}, ids, None, seg)
    return out[:, t]

  base = logits_at_t(ids)
  future_changed = logits_at_t(ids.at[:, 8].set(9))  # A later real token: output changes.
  pad_changed = logits_at_t(ids.at[:, 14].set(9))  # A padding token: output identical.
  assert float(jnp.abs(base - future_changed).max()) > 1e-4
  np.testing.assert_array_equal(np.asarray(base), np.asarray(pad_changed))


def test_bert_step_trains_only_selected_tokens(text_file, data_dir):
  c = tiny_config(text_file, data_dir, **{"model.family": "bert", "model.type_vocab_size": 2})
  run = train.Run(c, None, devices=jax.devices()[:1])
  assert run.objective.name == "masked_lm"
  state = run.init_state()
  assert "type_embed" in state.params
  rng = np.random.default_rng(0)
  tokens = rng.integers(7, 200, (8, 33)).astype(np.int32)
  batch = {"tokens": tokens, "segment_ids": np.ones_like(tokens),
           "positions": np.tile(np.arange(33, dtype=np.int32), (8, 1))}
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    _, m = run.jit_train_step()(state, run.to_global(batch))
  b = run.objective.inputs(run.to_global(batch), jax.random.fold_in(jax.random.key(c.seed), 0),
                           False)
  # The step's weight is the number of selected tokens (~15% of 8*32), not all tokens.
  assert float(m["tokens"]) == float(np.asarray(b["weights"]).sum())
  assert 10 < float(m["tokens"]) < 80


# ----------------------------------------------------------------------------- LSTM


def test_lstm_scan_equals_python_loop_over_time():
  x = jax.random.normal(jax.random.key(0), (3, 11, 8))
  layer = LSTM(hidden_dim=16)
  params = nn.meta.unbox(layer.init(jax.random.key(1), x)["params"])
  y_scan, (c_scan, h_scan) = layer.apply({"params": params}, x)
  gx = x @ params["wi"]["kernel"] + params["wi"]["bias"]
  cell = LSTMCell(16)
  carry = (jnp.zeros((3, 16)), jnp.zeros((3, 16)))
  ys = []
  for t in range(11):
    carry, y = cell.apply({"params": params["cell"]}, carry, gx[:, t])
    ys.append(y)
  np.testing.assert_allclose(np.stack(ys, 1), y_scan, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(carry[0], c_scan, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(carry[1], h_scan, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tie", [True, False])
def test_lstm_carry_across_windows_equals_whole_sequence(tie):
  cfg = _model_cfg("lstm", tie_embeddings=tie, lstm_hidden_dim=24 if tie else 0)
  model = models.build_model(cfg.model, vocab_size=60, seq_len=8)
  ids = jax.random.randint(jax.random.key(2), (2, 24), 7, 60)
  params = model.init(jax.random.key(0), ids[:, :8])["params"]
  whole = model.apply({"params": params}, ids)
  carry = models.initial_carry(model, 2)
  pieces = []
  for w in range(3):
    logits, carry = model.apply({"params": params}, ids[:, 8 * w:8 * (w + 1)], carry=carry)
    pieces.append(logits)
  np.testing.assert_allclose(np.concatenate(pieces, 1), whole, rtol=2e-5, atol=2e-5)
  # Without the carry the second window differs (the test can fail).
  fresh = model.apply({"params": params}, ids[:, 8:16])
  assert float(jnp.abs(fresh - whole[:, 8:16]).max()) > 1e-3


def test_lstm_resets_state_at_document_starts():
  model = models.build_model(_model_cfg("lstm").model, vocab_size=60, seq_len=16)
  ids = jax.random.randint(jax.random.key(2), (1, 16), 7, 60)
  params = model.init(jax.random.key(0), ids)["params"]
  pos = jnp.concatenate([jnp.arange(6), jnp.arange(10)])[None]  # Document 2 starts at t=6.
  packed = model.apply({"params": params}, ids, pos)
  alone = model.apply({"params": params}, ids[:, 6:])
  np.testing.assert_allclose(packed[:, 6:], alone, rtol=1e-5, atol=1e-5)


def test_lanes_are_contiguous_and_resume_exactly(text_file, data_dir):
  c = tiny_config(text_file, data_dir)
  from jaxlm.data.tokenizers import ByteTokenizer
  tok = ByteTokenizer()
  it = iter(lanes.lane_dataset(c.data, tok, seed=0))
  batches = [next(it) for _ in range(3)]
  state = it.get_state()
  after = [next(it) for _ in range(2)]
  for b0, b1 in zip(batches, batches[1:] + after[:1], strict=True):
    # Window t+1 of lane j starts where window t ended (one shared token).
    np.testing.assert_array_equal(b0["tokens"][:, -1], b1["tokens"][:, 0])
  # Lanes read different documents.
  assert len({tuple(r) for r in batches[0]["tokens"]}) == c.data.batch_size
  it2 = iter(lanes.lane_dataset(c.data, tok, seed=0))
  it2.set_state(state)
  for a, b in zip(after, [next(it2) for _ in range(2)], strict=True):
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
  # The ordinary pipeline does not keep rows contiguous (why lanes exist).
  plain = iter(pipeline.train_dataset(c.data, tok, 0))
  p0, p1 = next(plain), next(plain)
  assert (p0["tokens"][:, -1] != p1["tokens"][:, 0]).any()


def test_lstm_carried_state_lives_in_train_state(text_file, data_dir):
  c = tiny_config(text_file, data_dir, **{"model.family": "lstm", "model.carry_state": True})
  run = train.Run(c, None, devices=jax.devices()[:1])
  state = run.init_state()
  assert state.carry["c"].shape == (2, 8, 32)
  it = iter(lanes.lane_dataset(c.data, run.tokenizer, 0))
  b0, b1 = next(it), next(it)
  step = run.jit_train_step()
  # The state after step 1 equals running the model over window 0 from zeros.
  _, want = run.model.apply({"params": state.params}, jnp.asarray(b0["tokens"][:, :-1]),
                            carry=models.initial_carry(run.model, 8))
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    s1, _ = step(state, run.to_global(b0))  # Donates `state`.
    assert float(jnp.abs(s1.carry["h"]).max()) > 0
    np.testing.assert_allclose(s1.carry["h"], want["h"], rtol=1e-5, atol=1e-6)
    s2, _ = step(s1, run.to_global(b1))
  assert int(s2.step) == 2


def test_family_config_errors_name_the_field(text_file, data_dir):
  with pytest.raises(ConfigError, match="model.carry_state"):
    train.Run(tiny_config(text_file, data_dir, **{"model.carry_state": True}), None)
  with pytest.raises(ConfigError, match="optimizer.grad_accum_steps"):
    train.Run(tiny_config(text_file, data_dir, **{"model.family": "lstm",
                                                  "model.carry_state": True,
                                                  "optimizer.grad_accum_steps": 2}), None)
  with pytest.raises(ConfigError, match="mlm.random_prob"):
    train.Run(tiny_config(text_file, data_dir, **{"model.family": "bert",
                                                  "mlm.random_prob": 0.5}), None)
  with pytest.raises(ConfigError, match="model.family"):
    train.Run(tiny_config(text_file, data_dir, **{"model.family": "rnn"}), None)


@pytest.mark.parametrize("family,extra", [("bert", {"model.type_vocab_size": 2}),
                                          ("lstm", {"model.carry_state": True})])
def test_family_sharded_step_matches_single_device(text_file, data_dir, family, extra):
  """Real SGD updates (see tests/test_sharding.py): losses, gradients, parameters."""
  from test_sharding import SGD_LR, check_same_updates, sgd_run, steps

  over = {"model.family": family, **extra}
  r1 = sgd_run(tiny_config(text_file, data_dir, **over), devices=jax.devices()[:1])
  r8 = sgd_run(tiny_config(text_file, data_dir, **over, **{"mesh.shape": (2, 2, 2)}))
  init = jax.device_get(r1.init_state())
  s8 = jax.device_put(init, r8.state_shardings)
  if family == "lstm":  # The carried state is split over the batch axes like the data.
    assert s8.carry["c"].addressable_shards[0].data.shape == (2, 2, 32)
  it = iter((lanes.lane_dataset if family == "lstm" else pipeline.train_dataset)(
      r1.config.data, r1.tokenizer, 0))
  batches = [next(it) for _ in range(3)]  # Losses 2 and 3 follow real updates.
  s1, l1, g1 = steps(r1, jax.device_put(init), batches)
  s8, l8, g8 = steps(r8, s8, batches)
  np.testing.assert_allclose(l1, l8, rtol=2e-5)
  np.testing.assert_allclose(g1, g8, rtol=1e-4)
  r1.tx = optax.chain(optax.scale(0.5), optax.sgd(SGD_LR))  # Negative control: 1/2 gradient.
  broken, _, _ = steps(r1, jax.device_put(init), batches)
  check_same_updates(s1.params, init.params, s8.params, broken.params)


def test_recurrent_eval_deals_windows_into_contiguous_lanes(text_file, data_dir):
  from jaxlm import evaluation
  c = tiny_config(text_file, data_dir, **{"model.family": "lstm", "model.carry_state": True,
                                          "data.batch_size": 4})
  run = train.Run(c, None, devices=jax.devices()[:1])
  batches = pipeline.eval_batches(c.data, run.tokenizer)
  dealt = evaluation.deal_into_lanes(batches, 4)
  windows = np.concatenate([b["tokens"] for b in batches])
  real = windows[windows.any(axis=1)]
  got = np.concatenate([b["tokens"] for b in dealt])
  assert sorted(map(bytes, real)) == sorted(map(bytes, got[got.any(axis=1)]))  # Each once.
  for b0, b1 in zip(dealt, dealt[1:], strict=False):
    live = b1["tokens"].any(axis=1) & (b1["tokens"][:, 0] != 0)
    np.testing.assert_array_equal(b0["tokens"][live, -1], b1["tokens"][live, 0])
  state = run.init_state()
  carried = evaluation.evaluate(run, state.params)
  plain = evaluation.evaluate(train.Run(tiny_config(text_file, data_dir, **{
      "model.family": "lstm", "data.batch_size": 4}), None, devices=jax.devices()[:1]),
      state.params)
  assert carried["tokens"] == plain["tokens"]  # Same targets, counted once.
  assert abs(carried["loss"] - plain["loss"]) < 0.05  # Untrained: both near uniform.


def test_mlm_never_masks_special_tokens():
  """Issue #14 item 4: <eos>, <cls>, <sep>, <bos>, <mask> and pad are never selected, even with
  fraction=1 (on the old code every non-pad token, <eos> included, was a candidate)."""
  from jaxlm.data.tokenizers import BOS_ID, CLS_ID, EOS_ID, SEP_ID, UNK_ID
  rng = np.random.default_rng(1)
  tokens = rng.integers(NUM_SPECIAL, 60, (8, 65)).astype(np.int32)
  special = (PAD_ID, BOS_ID, EOS_ID, MASK_ID, CLS_ID, SEP_ID)
  where = rng.random(tokens.shape) < 0.3
  tokens[where] = rng.choice(special, where.sum())
  tokens[0, :4] = UNK_ID  # <unk> stands for a word: still a candidate.
  _, selected = objectives.mask_tokens(jax.random.key(0), jnp.asarray(tokens), 60, fraction=1.0)
  selected = np.asarray(selected)
  assert not selected[np.isin(tokens, special)].any()
  assert selected[~np.isin(tokens, special)].all()
  obj = objectives.Objective("masked_lm", vocab_size=60, fraction=1.0)
  batch = {"tokens": tokens, "segment_ids": np.ones_like(tokens),
           "positions": np.tile(np.arange(65, dtype=np.int32), (8, 1))}
  w = np.asarray(obj.inputs(batch, jax.random.key(0), False)["weights"])
  assert w.sum() == (~np.isin(tokens[:, :-1], special)).sum()  # The loss sees text tokens only.
