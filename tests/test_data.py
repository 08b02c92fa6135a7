"""Input pipeline: sources, packing, resumable iterator state, exact eval coverage."""


import numpy as np
import pytest
from conftest import tiny_config

from jaxlm.data import pipeline, sources, stdlib_docs
from jaxlm.data.tokenizers import EOS_ID, ByteTokenizer


def test_stdlib_corpus_is_prepared_with_metadata_and_split(data_dir):
  from jaxlm.config import base_config

  d = base_config().data
  d.data_dir = data_dir
  builder = sources.get_builder(d)
  meta = builder.info.metadata
  assert meta["python_version"].startswith(stdlib_docs.python_tag()[2:])
  assert len(meta["content_sha256"]) == 64
  train, val = builder.info.splits["train"].num_examples, builder.info.splits["validation"]\
      .num_examples
  assert train > 5000 and 0.03 < val / (train + val) < 0.07
  texts = list(sources.iter_texts(d, "validation", limit=5))
  assert all(isinstance(t, str) and t for t in texts)
  # Deterministic: the split of a document depends only on its text.
  assert all(stdlib_docs.is_validation(t, 0.05) for t in texts)


def test_local_text_tail_split_and_content_hash(tmp_path, data_dir):
  path = tmp_path / "a.txt"
  path.write_text("".join(f"paragraph {i} text\n\n" for i in range(100)))
  c = tiny_config(str(path), data_dir)
  c.data.val_split, c.data.val_fraction = "tail", 0.1
  text = path.read_text()
  cut = int(len(text) * 0.9)
  train = list(sources.iter_texts(c.data, "train"))
  val = list(sources.iter_texts(c.data, "validation"))
  assert all(t in text[:cut] for t in train) and all(v in text[cut:] for v in val)
  assert sum(map(len, train + val)) == len(text.replace("\n", "")) - 0  # Nothing lost.
  name1 = sources.get_builder(c.data).builder_config.name
  path.write_text("changed\n\nagain\n\n" * 30)
  name2 = sources.get_builder(c.data).builder_config.name
  assert name1 != name2  # A changed file is prepared again.


def test_missing_and_empty_files_fail_clearly(tmp_path, data_dir):
  c = tiny_config(str(tmp_path / "nope.txt"), data_dir)
  with pytest.raises(sources.DataError, match="data.path"):
    sources.get_builder(c.data)
  empty = tmp_path / "empty.txt"
  empty.write_text("  \n\n")
  c = tiny_config(str(empty), data_dir)
  with pytest.raises(sources.DataError, match="no text"):
    sources.get_builder(c.data)


def _docs_stream(docs):
  import grain

  return grain.MapDataset.source([np.array(d, np.int32) for d in docs]).to_iter_dataset()


def test_packing_windows_segments_positions():
  docs = [[10, 11, 12, EOS_ID], [20, 21, EOS_ID], [30, 31, 32, 33, 34, EOS_ID]]
  windows = list(pipeline.PackIterDataset(_docs_stream(docs), 5, pad_last=True))
  stream = [t for d in docs for t in d]
  # Windows overlap by one token; padding (0) only at the very end.
  got = [w["tokens"] for w in windows]
  np.testing.assert_array_equal(got[0], stream[0:5])
  np.testing.assert_array_equal(got[1], stream[4:9])
  np.testing.assert_array_equal(got[2], stream[8:13])
  np.testing.assert_array_equal(windows[0]["segment_ids"], [1, 1, 1, 1, 2])
  np.testing.assert_array_equal(windows[0]["positions"], [0, 1, 2, 3, 0])
  np.testing.assert_array_equal(windows[1]["segment_ids"], [1, 1, 1, 2, 2])
  np.testing.assert_array_equal(windows[1]["positions"], [0, 1, 2, 0, 1])
  targets = sum(int((w["tokens"][1:] != 0).sum()) for w in windows)
  assert targets == len(stream) - 1  # Every token but the first is a target exactly once.


def test_pack_state_restores_exact_continuation():
  rng = np.random.default_rng(0)
  docs = [list(rng.integers(7, 100, rng.integers(1, 30))) + [EOS_ID] for _ in range(200)]
  ds = pipeline.PackIterDataset(_docs_stream(docs), 16)
  it = iter(ds)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it)["tokens"] for _ in range(10)]
  it2 = iter(ds)
  it2.set_state(state)
  got = [next(it2)["tokens"] for _ in range(10)]
  np.testing.assert_array_equal(np.stack(expected), np.stack(got))


def test_train_iterator_resumes_exactly(text_file, data_dir):
  c = tiny_config(text_file, data_dir)
  tok = ByteTokenizer()
  it = iter(pipeline.train_dataset(c.data, tok, seed=3))
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it)["tokens"] for _ in range(40)]  # Crosses an epoch boundary.
  it2 = iter(pipeline.train_dataset(c.data, tok, seed=3))
  it2.set_state(state)
  np.testing.assert_array_equal(np.stack(expected), np.stack([next(it2)["tokens"]
                                                               for _ in range(40)]))
  other = iter(pipeline.train_dataset(c.data, tok, seed=4))
  assert not np.array_equal(next(other)["tokens"], next(iter(pipeline.train_dataset(
      c.data, tok, seed=3)))["tokens"])


def test_tokens_cached_up_front_give_the_same_batches_and_states(text_file, data_dir):
  """data.cache_tokens_mb (the training split tokenized once) changes no batch, for each of
  two processes, and a state saved by one pipeline resumes the other exactly."""
  c = tiny_config(text_file, data_dir)
  tok = ByteTokenizer()
  uncached = c.copy_and_resolve_references()
  uncached.data.cache_tokens_mb = 0
  assert pipeline._cache_tokens(c.data, None, "train")
  assert not pipeline._cache_tokens(uncached.data, None, "train")
  for process in (0, 1):
    a, b = (iter(pipeline.train_dataset(x.data, tok, 3, process, 2)) for x in (c, uncached))
    for _ in range(150):  # 19k tokens: past the end of a process's ~18k-byte share.
      x, y = next(a), next(b)
      assert x.keys() == y.keys()
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])
    for src, dst in ((a, uncached), (b, c)):
      state, want = src.get_state(), [next(src)["tokens"] for _ in range(5)]
      it = iter(pipeline.train_dataset(dst.data, tok, 3, process, 2))
      it.set_state(state)
      np.testing.assert_array_equal(np.stack(want), np.stack([next(it)["tokens"]
                                                              for _ in range(5)]))
  other = iter(pipeline.train_dataset(c.data, tok, 4, 0, 2))  # Negative control: a seed.
  assert not np.array_equal(next(other)["tokens"], next(iter(pipeline.train_dataset(
      uncached.data, tok, 3, 0, 2)))["tokens"])


def test_processes_read_disjoint_shards(text_file, data_dir):
  c = tiny_config(text_file, data_dir)
  n = len(sources.DataSource(c.data).split("train"))
  every = [bytes(x["text"]) for x in pipeline.documents(c.data, "train")]
  shards = [[bytes(x["text"]) for x in pipeline.documents(c.data, "train", i, 2)]
            for i in range(2)]
  assert len(every) == n and len(shards[0]) + len(shards[1]) == n
  # Process i reads documents i, i+2, ...: an exact partition, no document read twice.
  assert shards[0] == every[0::2] and shards[1] == every[1::2]


@pytest.mark.parametrize("batch_size", [8, 5])
def test_eval_batches_cover_every_token_once(text_file, data_dir, batch_size):
  c = tiny_config(text_file, data_dir)
  c.data.batch_size = batch_size
  tok = ByteTokenizer()
  total = sum(len(tok.encode(t)) + 1 for t in sources.iter_texts(c.data, "validation"))
  batches = pipeline.eval_batches(c.data, tok)
  targets = sum(int((b["tokens"][:, 1:] != 0).sum()) for b in batches)
  assert targets == total - 1
  assert all(b["tokens"].shape == (batch_size, c.data.seq_len + 1) for b in batches)


def test_shared_tinyshakespeare_when_present(data_dir):
  from conftest import shared_data

  path = shared_data("tinyshakespeare", "input.txt")
  from jaxlm.config import base_config

  d = base_config().data
  d.path, d.data_dir, d.doc_unit, d.val_split, d.val_fraction = path, data_dir, "paragraph", \
      "tail", 0.1
  val = list(sources.iter_texts(d, "validation"))
  with open(path) as f:
    text = f.read()
  tail = text[int(len(text) * 0.9):]
  assert sum(len(v) for v in val) <= len(tail) and val[-1] in tail
