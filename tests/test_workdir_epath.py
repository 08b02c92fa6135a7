"""Every file jaxlm writes or reads in a workdir goes through etils.epath (issue 20 item 4).

A `gs://bucket/...` workdir on etils' mock_epath backend, every epath call redirected to a
local folder (`<tmp>/bucket/...`) and recorded. A file written with plain `open`/`os` would
not be redirected: it would land in `./gs:/bucket/...` under the working directory instead
(the negative control shows it). What this does not test: a real `gs://` bucket (not
reachable here), nor orbax's own gs:// checkpoint I/O (tensorstore, not epath).
"""

import json
import os

import ml_collections
import pytest
from conftest import tiny_config
from etils.epath import testing as epath_testing

from jaxlm import evaluate, exposure, ngram_run
from jaxlm.data import tokenizers as T
from jaxlm.metric_writer import MetricWriter

FNS = ("exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rename",
       "replace", "rmtree", "stat", "walk")
WD = "gs://bucket/run"


@pytest.fixture
def gs(tmp_path, monkeypatch):
  """(mock context, local root, gs:// paths epath was called with, cwd = <tmp>/cwd)."""
  root = tmp_path / "store"
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  opened = set()

  def local(p):
    s = os.fspath(p)
    return s.replace("gs://", f"{root}/", 1) if s.startswith("gs://") else s

  def redirect(orig, path, *args, **kwargs):
    opened.update(os.fspath(a) for a in (path, *args) if isinstance(a, str | os.PathLike)
                  and os.fspath(a).startswith("gs://"))
    return orig(local(path), *[local(a) if isinstance(a, str | os.PathLike) else a
                               for a in args], **kwargs)

  return epath_testing.mock_epath(**{f: redirect for f in FNS}), root, opened, cwd


def _files(d) -> set[str]:
  return {f for f in os.listdir(d) if not f.startswith(".")} if os.path.isdir(d) else set()


def test_an_ngram_run_with_a_word_tokenizer_lands_in_a_gs_workdir_through_epath(
    gs, text_file, data_dir):
  mock, root, opened, cwd = gs
  c = tiny_config(text_file, data_dir, **{"model.family": "ngram", "ngram.order": 2,
                                          "data.tokenizer": "word"})
  c.data.canaries.counts = (1,)
  with mock:
    first = ngram_run.train_and_evaluate(c, WD)
    again = ngram_run.train_and_evaluate(c, WD)  # Resume: loads ngram.npz + tokenizer.json.
    ev = evaluate._evaluate_ngram(c, WD, c.data.eval_split)
    exp = exposure.run(WD, candidates=50)  # Reads config.json, tokenizer, ngram.npz.
    assert T.load_tokenizer(WD).kind == "word"
  local = root / "bucket" / "run"
  want = {"tokenizer.json", "vocab.txt", "ngram.npz", "ngram.json", "config.json",
          "metrics.jsonl", "canaries.json", "eval_validation_0.json", "exposure_0.json"}
  assert want <= _files(local), _files(local)
  assert {f"{WD}/{f}" for f in want} <= opened  # Each one written/read via epath.
  assert not os.path.exists(cwd / "gs:")  # Nothing went around epath.
  assert first["eval_loss"] == again["eval_loss"] == pytest.approx(ev["loss"])
  assert [json.loads(x)["step"] for x in open(local / "metrics.jsonl")] == [0]
  assert json.load(open(local / "ngram.json"))["order"] == 2
  assert json.load(open(local / "tokenizer.json"))["kind"] == "word"
  assert len(json.load(open(local / "canaries.json"))["canaries"]) == 1
  assert exp["path"] == f"{WD}/exposure_0.json" and exp["workdir"] == WD


def test_spm_and_char_tokenizers_save_and_load_through_epath(gs):
  mock, root, opened, cwd = gs
  text = " ".join(f"w{i % 37} x{i % 11} ka to ri ne" for i in range(3000))
  cfg = ml_collections.ConfigDict({"tokenizer": "spm", "vocab_size": 300,
                                   "spm_model_type": "bpe"})
  with mock:
    spm = T.get_tokenizer("spm", WD, lambda: [text], cfg)
    assert T.get_tokenizer("spm", WD, None, cfg).identity() == spm.identity()  # Loaded.
    assert T.tokenizer_from_path(f"{WD}/spm.model").identity() == spm.identity()
    assert T.tokenizer_from_path(f"{WD}/tokenizer.json").identity() == spm.identity()
    char = T.get_tokenizer("char", "gs://bucket/c", lambda: ["abc"])
    assert T.load_tokenizer("gs://bucket/c").identity() == char.identity()
    w = MetricWriter(WD, tensorboard=False)
    w.write(1, {"loss": 2.0})
    w.close()
  assert _files(root / "bucket" / "run") == {"spm.model", "tokenizer.json", "metrics.jsonl"}
  assert {f"{WD}/spm.model", f"{WD}/tokenizer.json", f"{WD}/metrics.jsonl",
          "gs://bucket/c/tokenizer.json"} <= opened
  assert not os.path.exists(cwd / "gs:")


def test_negative_control_plain_open_goes_around_the_mock(gs):
  """What the assertions above catch: a plain `os`/`open` write of a gs:// path is not
  redirected (it makes `./gs:/bucket/...`) and is not recorded."""
  mock, root, opened, cwd = gs
  with mock:
    os.makedirs("gs://bucket/run", exist_ok=True)
    with open("gs://bucket/run/tokenizer.json", "w") as f:
      f.write("{}")
  assert os.path.exists(cwd / "gs:" / "bucket" / "run" / "tokenizer.json")
  assert not _files(root / "bucket" / "run") and not opened
