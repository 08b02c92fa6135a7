"""Where documents come from: tfds datasets by name, the embedded corpus, local files.

Every source ends as a prepared tfds dataset (array_record) read with
`as_data_source`, a random-access sequence of `{text_key: bytes}` that grain
consumes. Local files go through the `jaxlm_local_text` builder, whose config
name is a hash of the files' contents and the options, so a changed file is
prepared again and an unchanged one is not.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
from collections.abc import Iterator, Sequence

import tensorflow_datasets as tfds

from jaxlm.data import stdlib_docs

LOCAL_NAME = "jaxlm_local_text"
DOC_UNITS = ("file", "paragraph", "line")


class DataError(ValueError):
  """Missing or malformed data; the message says what and how to fix it."""


def expand_paths(spec: str) -> list[str]:
  """Comma-separated files/globs to a sorted, de-duplicated list of existing files."""
  paths: list[str] = []
  for part in [p.strip() for p in spec.split(",") if p.strip()]:
    part = os.path.expanduser(part)
    matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
    if not matches:
      raise DataError(f"config.data.path: no file matches {part!r}. Fix: check the glob.")
    for m in matches:
      if not os.path.isfile(m):
        raise DataError(f"config.data.path: {m!r} does not exist or is not a file. "
                        "Fix: give an existing text file (or a glob).")
      if os.path.abspath(m) not in paths:
        paths.append(os.path.abspath(m))
  if not paths:
    raise DataError("config.data.path is empty. Fix: give one or more files or globs.")
  return paths


def split_documents(text: str, unit: str) -> list[str]:
  """A text to its documents: the whole file, blank-line blocks, or lines."""
  if unit == "file":
    docs = [text]
  elif unit == "paragraph":
    docs = re.split(r"\n[ \t]*\n", text)
  elif unit == "line":
    docs = text.split("\n")
  else:
    raise DataError(f"config.data.doc_unit={unit!r} is not one of {DOC_UNITS}.")
  return [d.strip("\n") for d in docs if d.strip()]


@dataclasses.dataclass(eq=False)
class LocalTextConfig(tfds.core.BuilderConfig):
  """Files and split options; `name` is their content hash."""

  paths: Sequence[str] = ()
  doc_unit: str = "file"
  val_fraction: float = 0.05
  val_split: str = "hash"


def local_text_config(paths: Sequence[str], doc_unit: str, val_fraction: float,
                      val_split: str) -> LocalTextConfig:
  h = hashlib.sha256(f"{doc_unit}|{val_fraction}|{val_split}".encode())
  for p in paths:
    with open(p, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    h.update(b"\0file\0")
  return LocalTextConfig(name="h" + h.hexdigest()[:20], paths=tuple(paths), doc_unit=doc_unit,
                         val_fraction=val_fraction, val_split=val_split)


class JaxlmLocalText(tfds.core.GeneratorBasedBuilder):
  """Local plain-text files as a tfds dataset with train/validation splits."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Plain text; split by document hash or by tail."}
  BUILDER_CONFIGS: list = []

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg: LocalTextConfig = self.builder_config
    texts = []
    for p in cfg.paths:
      with open(p, "rb") as f:
        texts.append(f.read().decode("utf-8", errors="replace"))
    if not any(t.strip() for t in texts):
      raise DataError(f"config.data.path: {', '.join(cfg.paths)} contain no text. "
                      "Fix: point to non-empty text files.")
    self.info.metadata["paths"] = list(cfg.paths)
    if cfg.val_split == "tail":
      whole = "\n\n".join(texts) if cfg.doc_unit != "file" else None
      if whole is not None:
        cut = int(len(whole) * (1 - cfg.val_fraction))
        train = split_documents(whole[:cut], cfg.doc_unit)
        val = split_documents(whole[cut:], cfg.doc_unit)
      else:
        docs = [d for t in texts for d in split_documents(t, "file")]
        cut = max(1, int(round(len(docs) * (1 - cfg.val_fraction))))
        train, val = docs[:cut], docs[cut:]
    elif cfg.val_split == "hash":
      docs = [d for t in texts for d in split_documents(t, cfg.doc_unit)]
      flags = [stdlib_docs.is_validation(d, cfg.val_fraction) for d in docs]
      train = [d for d, v in zip(docs, flags, strict=True) if not v]
      val = [d for d, v in zip(docs, flags, strict=True) if v]
    else:
      raise DataError(f"config.data.val_split={cfg.val_split!r} is not 'hash' or 'tail'.")
    if not train or not val:
      raise DataError(
          f"config.data: splitting {len(train) + len(val)} documents gave an empty "
          f"{'train' if not train else 'validation'} split. Fix: use more text, a finer "
          "data.doc_unit ('paragraph' or 'line') or a different data.val_fraction.")
    return {"train": self._generate_examples(train), "validation": self._generate_examples(val)}

  def _generate_examples(self, docs):
    for i, text in enumerate(docs):
      yield i, {"text": text}


def _data_dir(d) -> str | None:
  return os.path.expanduser(d.data_dir) if d.data_dir else None


def get_builder(d, prepare: bool = True) -> tfds.core.DatasetBuilder:
  """The prepared tfds builder for `config.data` (preparing it once if it is ours)."""
  tfds.disable_progress_bar()
  if d.path:
    cfg = local_text_config(expand_paths(d.path), d.doc_unit, d.val_fraction, d.val_split)
    builder = JaxlmLocalText(config=cfg, data_dir=_data_dir(d), file_format="array_record")
  elif d.name == stdlib_docs.NAME:
    builder = stdlib_docs.JaxlmStdlibDocs(data_dir=_data_dir(d), file_format="array_record")
  else:
    try:
      builder = tfds.builder(d.name, data_dir=_data_dir(d))
    except Exception as e:  # tfds raises several types for unknown names.
      raise DataError(f"config.data.name={d.name!r}: tfds cannot find it ({e}). Fix: use a "
                      "tfds catalog name, or config.data.path for local files.") from e
    if not builder.is_prepared():
      raise DataError(
          f"config.data.name={d.name!r} is not prepared in {builder.data_dir_root}. This "
          "machine cannot download it now. Fix: prepare it where there is network ("
          f"`tfds build {d.name} --file_format=array_record --data_dir=DIR`) and pass "
          "--config.data.data_dir=DIR, or use local files with --config.data.path.")
    return builder
  if prepare and not builder.is_prepared():
    builder.download_and_prepare()
  return builder


def data_source(d, split: str):
  """A random-access source of examples for `split`, with a clear error if absent."""
  builder = get_builder(d)
  if split not in builder.info.splits:
    raise DataError(f"Split {split!r} is not in {builder.name} (has "
                    f"{sorted(builder.info.splits)}). Fix: set config.data.train_split/"
                    "eval_split.")
  try:
    return builder.as_data_source(split=split)
  except NotImplementedError as e:
    raise DataError(f"{builder.name} is prepared as {builder.info.file_format}, which needs "
                    "TensorFlow to read. Fix: prepare it with --file_format=array_record.") from e


def iter_texts(d, split: str, limit: int = 0) -> Iterator[str]:
  """Documents of a split as str (for tokenizer training and inspection)."""
  src = data_source(d, split)
  n = len(src) if not limit else min(limit, len(src))
  for i in range(n):
    yield decode_text(src[i][d.text_key])


def decode_text(value) -> str:
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
