"""Every source kind through the tfds builder: jsonl, tsv/csv, parallel, catalog, bad input."""

import json
import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import shared_data

from jaxlm.config import base_config
from jaxlm.data import pipeline, sources
from jaxlm.data.sources import DataError
from jaxlm.data.tokenizers import ByteTokenizer


def _cfg(data_dir, path, **fields):
  d = base_config().data
  d.data_dir, d.path, d.name = data_dir, str(path), ""
  for k, v in fields.items():
    d[k] = v
  return d


def _examples(d, split):
  src = sources.DataSource(d).split(split)
  return [{k: sources.decode_text(v) if isinstance(v, bytes) else int(v) for k, v in src[i]
           .items()} for i in range(len(src))]


def test_jsonl_text_and_label_names(tmp_path, data_dir):
  rows = [{"body": f"review number {i} is {'good' if i % 3 else 'bad'}",
           "stars": "pos" if i % 3 else "neg", "id": i} for i in range(40)]
  (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
  (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows[20:]))
  d = _cfg(data_dir, tmp_path / "*.jsonl", format="jsonl", text_key="body", label_key="stars",
           labels=("neg", "pos"), val_split="tail", val_fraction=0.25)
  train, val = _examples(d, "train"), _examples(d, "validation")
  assert len(train) == 30 and len(val) == 10  # Both files, glob order, tail split.
  want = [{"text": r["body"], "label": int(r["stars"] == "pos")} for r in rows]
  assert train + val == want
  assert sources.get_builder(d).info.features["label"].names == ["neg", "pos"]


def test_tsv_and_csv_with_header(tmp_path, data_dir):
  (tmp_path / "t.tsv").write_text("id\tsentence\tlabel\n" + "".join(
      f"{i}\tsentence \"{i}\" here\t{i % 2}\n" for i in range(30)))
  d = _cfg(data_dir, tmp_path / "t.tsv", format="tsv", text_key="sentence", label_key="label",
           num_classes=2, eval_path=str(tmp_path / "t.tsv"))
  got = _examples(d, "train")
  assert got[3] == {"text": 'sentence "3" here', "label": 1} and len(got) == 30
  assert _examples(d, "validation") == got  # eval_path: its own split, not a fraction.
  (tmp_path / "c.csv").write_text('\ufefftext,label\n"one, two",1\n"say ""hi""",0\nplain,1\n')
  d = _cfg(data_dir, tmp_path / "c.csv", format="csv", label_key="label", num_classes=2,
           eval_path=str(tmp_path / "c.csv"))
  assert [e["text"] for e in _examples(d, "train")] == ["one, two", 'say "hi"', "plain"]
  # As unlabeled LM text the label column is simply not read.
  d = _cfg(data_dir, tmp_path / "c.csv", format="csv", eval_path=str(tmp_path / "c.csv"))
  assert "label" not in sources.DataSource(d).split("train")[0]


def test_parallel_pairs(tmp_path, data_dir):
  src = [f"a small house number {i}" for i in range(25)]
  tgt = [f"ein kleines haus nummer {i}" for i in range(25)]
  (tmp_path / "train.en").write_text("\n".join(src) + "\n")
  (tmp_path / "train.de").write_text("\n".join(tgt) + "\n")
  d = _cfg(data_dir, tmp_path / "train.en", format="parallel",
           target_path=str(tmp_path / "train.de"), eval_path=str(tmp_path / "train.en"),
           eval_target_path=str(tmp_path / "train.de"))
  got = _examples(d, "validation")
  assert got == [{"text": s, "target": t} for s, t in zip(src, tgt, strict=True)]
  (tmp_path / "short.de").write_text("\n".join(tgt[:24]) + "\n")
  d.target_path = d.eval_target_path = str(tmp_path / "short.de")
  with pytest.raises(DataError, match="25 lines but .*short.de has 24"):
    sources.get_builder(d)


def test_content_hash_and_options_key_the_prepared_dataset(tmp_path, data_dir):
  (tmp_path / "a.txt").write_text("".join(f"document {i}\n\n" for i in range(60)))
  d = _cfg(data_dir, tmp_path / "a.txt", doc_unit="paragraph")
  b1 = sources.get_builder(d)
  mtime = os.path.getmtime(b1.data_dir)
  time.sleep(0.01)
  assert sources.get_builder(d).data_dir == b1.data_dir  # Unchanged: not prepared again.
  assert os.path.getmtime(b1.data_dir) == mtime
  names = {b1.builder_config.name}
  for field, value in (("doc_unit", "line"), ("val_fraction", 0.1), ("format", "jsonl")):
    names.add(sources.local_config(_cfg(data_dir, d.path, **{field: value})).name)
  d.clean.enabled = True
  names.add(sources.local_config(d).name)
  d.clean.min_chars = 3
  names.add(sources.local_config(d).name)
  assert len(names) == 6  # Every option that changes the examples changes the key.


def test_non_utf8_replaced_and_counted_or_rejected(tmp_path, data_dir):
  path = tmp_path / "bad.txt"
  path.write_bytes(b"caf\xe9 au lait\n\nna\xefve \xff\xfe text\n\n" * 10)
  d = _cfg(data_dir, path, doc_unit="paragraph", eval_path=str(path))
  texts = list(sources.iter_texts(d, "train"))
  assert texts[0] == "caf\ufffd au lait" and texts[1] == "na\ufffdve \ufffd\ufffd text"
  stats = sources.get_builder(d).info.metadata["read_stats"]
  assert stats["invalid_utf8_bytes"] == 2 * 4 * 10  # Each file is read twice (train, eval).
  d.encoding_errors = "strict"
  with pytest.raises(DataError, match=r"bad.txt: byte 3 is not valid UTF-8.*encoding_errors"):
    sources.get_builder(d)


@pytest.mark.parametrize("content,fields,match", [
    ('{"text": "a"}\n{"txt": "b"}\n', {"format": "jsonl"}, r"x.jsonl:2: no text field 'text'"),
    ('{"text": "a", "y": "maybe"}\n', {"format": "jsonl", "label_key": "y", "labels": ("no",
                                                                               "yes")},
     r"x.jsonl:1: label 'maybe' is not in the label set \['no', 'yes'\]"),
    ("text\tlabel\na\t0\nb\t2\n", {"format": "tsv", "label_key": "label", "num_classes": 2},
     r"x.tsv:3: label '2' is not in the label set"),
    ("sentence\tlabel\na\t0\n", {"format": "tsv"}, r"no column 'text' in the header"),
    ("text\tlabel\na\t0\n", {"format": "tsv", "label_key": "label"}, "label set is not"),
    ("text\tlabel\na\t0\textra\n", {"format": "tsv"}, "x.tsv:2: 3 columns"),
    ("{not json\n", {"format": "jsonl"}, r"x.jsonl:1: not valid JSON"),
    ("x\n", {"format": "yaml"}, "data.format='yaml'"),
    ("x\n", {"format": "parallel"}, "target_path"),
    ("x\n", {"label_key": "y", "num_classes": 2}, "files have none"),
])
def test_bad_input_is_a_clear_error(tmp_path, data_dir, content, fields, match):
  ext = {"jsonl": "jsonl", "tsv": "tsv"}.get(fields.get("format"), "txt")
  path = tmp_path / f"x.{ext}"
  path.write_text(content)
  d = _cfg(data_dir, path, eval_path=str(path), **fields)
  with pytest.raises(DataError, match=match):
    sources.get_builder(d)


def test_an_empty_file_among_several_is_an_error(tmp_path, data_dir):
  (tmp_path / "a.txt").write_text("text\n")
  (tmp_path / "b.txt").write_text("")
  d = _cfg(data_dir, f"{tmp_path}/a.txt,{tmp_path}/b.txt")
  with pytest.raises(DataError, match=r"b.txt is empty"):
    sources.get_builder(d)


def test_catalog_dataset_not_prepared_fails_at_once(tmp_path):
  d = base_config().data
  d.name, d.data_dir = "lm1b", str(tmp_path / "empty")
  t0 = time.time()
  with pytest.raises(DataError, match=r"'lm1b' is not prepared in .*empty.*tfds build lm1b"):
    sources.DataSource(d).split("train")
  assert time.time() - t0 < 30
  d.name = "no_such_dataset_xyz"
  with pytest.raises(DataError, match="tfds cannot find it"):
    sources.DataSource(d).split("train")


class JaxlmTestReviews(tfds.core.GeneratorBasedBuilder):
  """A tiny catalog-like dataset: its own feature names, a ClassLabel, a test split."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "sentence": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["n", "p"]),
        "idx": np.int32}))

  def _split_generators(self, dl_manager):
    rows = [(f"review {i % 12 if i < 24 else i} says it is {'fine' if i % 2 else 'poor'}",
             i % 2) for i in range(30)]
    return {"train": self._generate_examples(rows[:24]), "test": self._generate_examples(rows[24:])}

  def _generate_examples(self, rows):
    for i, (s, y) in enumerate(rows):
      yield i, {"sentence": s, "label": y, "idx": i}


def test_catalog_dataset_by_name_with_keys_splits_and_cleaning(tmp_path):
  data_dir = str(tmp_path / "tfds")
  JaxlmTestReviews(data_dir=data_dir, file_format="array_record").download_and_prepare()
  d = base_config().data
  d.name, d.data_dir, d.eval_split = "jaxlm_test_reviews", data_dir, "test"
  d.text_key, d.label_key, d.num_classes = "sentence", "label", 2
  train = _examples(d, "train")
  assert len(train) == 24 and {e["text"] for e in train} == {
      f"review {i} says it is {'fine' if i % 2 else 'poor'}" for i in range(12)}
  assert all(e["label"] == e["text"].endswith("fine") for e in train)
  d.text_key = "body"
  with pytest.raises(DataError, match=r"no feature 'body' \(has \['idx', 'label', 'sentence'\]"):
    sources.DataSource(d).split("train")
  d.text_key, d.clean.enabled = "sentence", True  # Re-written through the cleaning steps.
  builder = sources.get_builder(d)
  assert builder.name == sources.LOCAL_NAME and builder.info.metadata["clean_report"]
  cleaned = _examples(d, "train")
  assert len(cleaned) == 12 and {e["text"] for e in cleaned} == {e["text"] for e in train}
  assert all(e["label"] == e["text"].endswith("fine") for e in cleaned)  # Labels follow.
  assert len(_examples(d, "test")) == 6


def test_pad_mode_rows_labels_and_truncation(tmp_path, data_dir):
  path = tmp_path / "p.tsv"
  lines = ["a", "bb cc", "x" * 50, "dd"]
  path.write_text("text\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(lines)))
  d = _cfg(data_dir, path, format="tsv", label_key="label", num_classes=2, packing="pad",
           seq_len=9, batch_size=3, eval_path=str(path), shuffle=False)
  tok = ByteTokenizer()
  b = pipeline.eval_batches(d, tok, with_labels=True)
  assert len(b) == 2 and b[0]["tokens"].shape == (3, 10)
  row = b[0]["tokens"][1]
  np.testing.assert_array_equal(row, [tok.bos_id, *tok.encode("bb cc"), tok.eos_id, 0, 0, 0])
  np.testing.assert_array_equal(b[0]["segment_ids"][1], [1] * 7 + [0] * 3)
  np.testing.assert_array_equal(b[0]["positions"][1], list(range(7)) + [0] * 3)
  # Source bytes per token (for bits per byte): BOS 0, "bb cc" 1 each, EOS its newline, pad 0.
  np.testing.assert_array_equal(b[0]["bytes"][1], [0, 1, 1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(b[0]["label"], [0, 1, 0])
  np.testing.assert_array_equal(b[1]["label"], [1, -1, -1])  # Padding rows: label -1, no tokens.
  assert not b[1]["segment_ids"][1:].any()
  np.testing.assert_array_equal(b[0]["tokens"][2], [tok.bos_id, *tok.encode("x" * 9)])  # Cut.
  from jaxlm import objectives
  w = np.asarray(objectives.split_window(b[0])["weights"])
  assert w[1].tolist() == [1] * 6 + [0] * 3  # Loss mask: real targets only, no padding.
  it = iter(pipeline.train_dataset(d, tok, seed=0, with_labels=True))
  assert next(it)["label"].shape == (3,)
  d.truncate = False
  with pytest.raises(DataError, match="52 tokens.*data.seq_len"):
    pipeline.eval_batches(d, tok)


@pytest.mark.parametrize("name", ["sst2/dev.tsv", "multi30k/val.en"])
def test_shared_datasets_when_present(data_dir, name):
  path = shared_data(*name.split("/"))
  if name.startswith("sst2"):
    d = _cfg(data_dir, path, format="tsv", text_key="sentence", label_key="label",
             num_classes=2, eval_path=path)
    got = _examples(d, "validation")
    assert len(got) == 872 and {e["label"] for e in got} == {0, 1}
  else:
    d = _cfg(data_dir, path, format="parallel", target_path=path[:-3] + ".de", eval_path=path,
             eval_target_path=path[:-3] + ".de")
    got = _examples(d, "validation")
    with open(path) as f, open(path[:-3] + ".de") as g:
      first = {"text": f.readline().rstrip("\n"), "target": g.readline().rstrip("\n")}
    assert len(got) == 1014 and got[0] == first


def test_recipes_read_shared_data_when_present(data_dir):
  import importlib.util

  from conftest import REPO

  from jaxlm.data import tokenizers as tok_lib

  wt = os.path.dirname(shared_data("wikitext-2", "valid.txt"))
  spec = importlib.util.spec_from_file_location("wt2", os.path.join(REPO, "configs",
                                                                     "wikitext2_word.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("smoke")
  d = c.data
  d.data_dir, d.path, d.eval_path = data_dir, f"{wt}/valid.txt", f"{wt}/test.txt"
  tok = tok_lib.get_tokenizer(d.tokenizer, None, lambda: sources.iter_texts(d, "train"), d)
  (train,), (test,) = sources.iter_texts(d, "train"), sources.iter_texts(d, "validation")
  assert train.startswith(" \n = Homarus gammarus = ") and tok.kind == "word"
  ids = tok.encode(test)
  assert (ids == tok.eos_id).sum() == test.count("\n") and 0.02 < (ids == tok.unk_id).mean() < 0.2



def test_a_dataset_prepared_meanwhile_by_another_process_is_used(tmp_path, monkeypatch):
  """Two runs of a sweep prepare one dataset at once: tfds's second rename into place fails
  (FileExistsError); that process uses the first one's folder instead of crashing."""
  d = base_config().data
  d.path = str(tmp_path / "t.txt")
  (tmp_path / "t.txt").write_text("\n\n".join(f"document {i}" for i in range(40)))
  d.data_dir, d.doc_unit = str(tmp_path / "tfds"), "paragraph"
  real = sources.JaxlmLocalText.download_and_prepare

  def loser(self, *a, **kw):  # The other process finishes first; our rename then fails.
    real(self, *a, **kw)
    raise FileExistsError("Cannot rename incomplete.X: destination already exists.")

  monkeypatch.setattr(sources.JaxlmLocalText, "download_and_prepare", loser)
  builder = sources.get_builder(d)
  assert builder.is_prepared() and len(sources.DataSource(d).split("train")) > 30

  def never(self, *a, **kw):  # Negative control: nothing was prepared after all.
    raise FileExistsError("Cannot rename incomplete.X")

  monkeypatch.setattr(sources.JaxlmLocalText, "download_and_prepare", never)
  d.data_dir = str(tmp_path / "tfds2")
  with pytest.raises(FileExistsError):
    sources.get_builder(d)


def test_a_run_opens_its_dataset_once_and_hands_it_down(text_file, tmp_path, monkeypatch):
  """Tokenizer, every shard of the training stream and evaluation read the `Run`'s
  `DataSource`: the builder is made (local files hashed) once per run, not per shard/split."""
  import jax
  from conftest import tiny_config

  from jaxlm import evaluation, train

  c = tiny_config(text_file, str(tmp_path / "data"), **{"data.shards": 2})
  calls = []
  real = sources.get_builder
  monkeypatch.setattr(sources, "get_builder", lambda *a, **k: calls.append(1) or real(*a, **k))
  run = train.Run(c, str(tmp_path / "wd"), devices=jax.devices()[:1])
  it = train.LoopHooks(run).train_iterator()
  assert len(it._its) == 2 and next(it)["tokens"].shape == (8, 33)
  assert evaluation._batches(run, None, 1, 1)
  assert len(calls) == 1, f"the dataset was opened {len(calls)} times"
  # Control: the same reads without the run's source open it once per shard.
  calls.clear()
  from jaxlm.data import shards
  shards.ShardedIterator(c.data, run.tokenizer, 0, 0, 1)
  assert len(calls) == 1  # One ShardedIterator: opened once for both shards...
  pipeline.train_dataset(c.data, run.tokenizer, 0, 0, 2)
  pipeline.train_dataset(c.data, run.tokenizer, 0, 1, 2)
  assert len(calls) == 3  # ...but each bare pipeline call opens it again.
