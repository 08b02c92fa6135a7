"""The classic word-level LM protocol: one stream per split, B contiguous lanes (data/lanes.py)."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_cli, tiny_config

from jaxlm import evaluation, models, train
from jaxlm.data import lanes
from jaxlm.data.tokenizers import EOS_ID, PAD_ID

WORDS = "the a of cat dog sat on mat N <unk> ran far".split()


def _word_corpus(path, lines: int, seed: int) -> str:
  rng = np.random.default_rng(seed)
  rows = [" " + " ".join(rng.choice(WORDS, size=rng.integers(0, 12))) + " " for _ in range(lines)]
  rows[3] = ""  # Blank lines end in <eos> too.
  path.write_text("\n".join(rows) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def ptb_like(tmp_path_factory):
  d = tmp_path_factory.mktemp("ptb_like")
  return _word_corpus(d / "train.txt", 400, 0), _word_corpus(d / "valid.txt", 90, 1)


def _config(ptb_like, data_dir, **over):
  train_path, valid_path = ptb_like
  return tiny_config(train_path, data_dir, **{
      "data.eval_path": valid_path, "data.doc_unit": "file", "data.tokenizer": "word",
      "data.shuffle": False, "model.family": "lstm", "model.carry_state": True,
      "data.batch_size": 4, "data.seq_len": 8, "eval_steps": -1, **over})


def _expected_count(path) -> int:
  with open(path) as f:
    text = f.read()
  return len(text.split()) + text.count("\n")  # Every word and one <eos> per line.


def test_stream_is_every_line_with_eos_and_vocab_from_train(ptb_like, data_dir):
  c = _config(ptb_like, data_dir)
  run = train.Run(c, None, devices=jax.devices()[:1])
  stream = lanes.stream_tokens(c.data, run.tokenizer, c.data.eval_split)
  assert stream[0] == EOS_ID and len(stream) - 1 == _expected_count(ptb_like[1])
  assert np.count_nonzero(stream[1:] == EOS_ID) == 90  # One per line, the blank one included.
  assert run.tokenizer.vocab_size == 7 + len(set(WORDS) - {"<unk>"})


def test_eval_lanes_target_every_token_once_in_order(ptb_like, data_dir):
  c = _config(ptb_like, data_dir)
  run = train.Run(c, None, devices=jax.devices()[:1])
  stream = lanes.stream_tokens(c.data, run.tokenizer, c.data.eval_split)
  batches = lanes.stream_eval_batches(c.data, run.tokenizer)
  tok = np.stack([b["tokens"] for b in batches], 1)  # [B, windows, T+1]
  for t in range(tok.shape[1] - 1):  # Window t+1 of a lane starts where window t ended.
    live = tok[:, t + 1, 1] != PAD_ID
    np.testing.assert_array_equal(tok[live, t, -1], tok[live, t + 1, 0])
  targets = tok[:, :, 1:].reshape(-1)  # Lane by lane, window by window.
  np.testing.assert_array_equal(targets[targets != PAD_ID], stream[1:])  # Each once, in order.
  assert len(targets[targets != PAD_ID]) == _expected_count(ptb_like[1])


def test_train_lanes_are_contiguous_rows_of_the_stream_and_resume(ptb_like, data_dir):
  c = _config(ptb_like, data_dir)
  run = train.Run(c, None, devices=jax.devices()[:1])
  stream = lanes.stream_tokens(c.data, run.tokenizer, c.data.train_split)
  it = iter(lanes.lane_dataset(c.data, run.tokenizer, 0))
  n, t = len(stream) // 4, 8
  per_epoch = (n - 1) // t
  assert it.windows_per_epoch == per_epoch
  got = [next(it) for _ in range(per_epoch + 2)]
  for w in range(per_epoch):
    for j in range(4):
      start = j * n + w * t
      np.testing.assert_array_equal(got[w]["tokens"][j], stream[start:start + t + 1])
  np.testing.assert_array_equal(got[per_epoch]["tokens"], got[0]["tokens"])  # Next epoch.
  it.set_state({"stream_window": 1})
  np.testing.assert_array_equal(next(it)["tokens"], got[1]["tokens"])
  with pytest.raises(ValueError, match="Fix"):
    it.set_state({"lanes": []})


def test_state_is_carried_along_eval_lanes(ptb_like, data_dir):
  """Windowed lane eval with the carried state == each lane run in one piece."""
  c = _config(ptb_like, data_dir)
  run = train.Run(c, None, devices=jax.devices()[:1])
  params = run.init_state().params
  got = evaluation.evaluate(run, params)
  batches = lanes.stream_eval_batches(c.data, run.tokenizer)
  whole = np.concatenate([batches[0]["tokens"][:, :1]] + [b["tokens"][:, 1:] for b in batches], 1)
  logits = run.model.apply({"params": params}, jnp.asarray(whole[:, :-1]))
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(whole[:, 1:, None]), -1)
  w = whole[:, 1:] != PAD_ID
  assert got["tokens"] == w.sum() == _expected_count(ptb_like[1])
  np.testing.assert_allclose(got["loss"], float((nll[..., 0] * w).sum() / w.sum()), rtol=1e-5)
  # Negative control: resetting the state at every window changes the loss.
  reset = []
  for b in batches:
    lg = run.model.apply({"params": params}, jnp.asarray(b["tokens"][:, :-1]))
    reset.append(-jnp.take_along_axis(jax.nn.log_softmax(lg), b["tokens"][:, 1:, None], -1)[..., 0]
                 * (b["tokens"][:, 1:] != PAD_ID))
  assert abs(float(sum(r.sum() for r in reset)) / w.sum() - got["loss"]) > 1e-5


def test_train_step_carries_the_state_across_stream_windows(ptb_like, data_dir):
  c = _config(ptb_like, data_dir)
  run = train.Run(c, None, devices=jax.devices()[:1])
  state = run.init_state()
  it = iter(lanes.lane_dataset(c.data, run.tokenizer, 0))
  b0 = next(it)
  _, want = run.model.apply({"params": state.params}, jnp.asarray(b0["tokens"][:, :-1]),
                            carry=models.initial_carry(run.model, 4))
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    s1, _ = run.jit_train_step()(state, run.to_global(b0))
  np.testing.assert_allclose(s1.carry["h"], want["h"], rtol=1e-5, atol=1e-6)


def test_cli_one_stream_protocol_reports_the_standard_token_count(ptb_like, data_dir, tmp_path):
  train_path, valid_path = ptb_like
  wd = str(tmp_path / "wd")
  r = run_cli(["--config=configs/lstm.py:smoke", f"--workdir={wd}",
               f"--config.data.path={train_path}", f"--config.data.eval_path={valid_path}",
               "--config.data.doc_unit=file", "--config.data.tokenizer=word",
               "--config.data.batch_size=4", "--config.data.seq_len=8", "--config.eval_steps=-1",
               f"--config.data.data_dir={data_dir}", "--config.num_train_steps=4",
               "--config.eval_every_steps=4", "--config.sample.num_tokens=0"])
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [json.loads(x) for x in open(os.path.join(wd, "metrics.jsonl"))]
  evals = [x for x in rows if "eval_tokens" in x]
  assert evals and evals[-1]["eval_tokens"] == _expected_count(valid_path)


def test_ptb_valid_has_the_standard_token_count():
  root = os.path.join(os.environ.get("JAXLM_SHARED_DATA", "../shared/data"), "ptb")
  if not os.path.exists(os.path.join(root, "ptb.valid.txt")):
    pytest.skip(f"PTB not found under {root} (set JAXLM_SHARED_DATA)")
  assert _expected_count(os.path.join(root, "ptb.valid.txt")) == 73_760
  assert _expected_count(os.path.join(root, "ptb.train.txt")) == 929_589
