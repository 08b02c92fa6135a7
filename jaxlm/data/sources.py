"""Where examples come from: tfds datasets by name, the embedded corpus, local files.

Every source ends as a prepared tfds dataset (array_record) read with `as_data_source`: a
random-access sequence of example dicts that grain consumes, always with a `text` key, plus
`label` (int id) and `target` (a second text, e.g. the translation) when configured.

Local files (plain text, JSON lines, TSV/CSV, parallel pairs; globs and lists) go through the
one `jaxlm_local_text` builder, whose config name is a hash of the files' contents and of every
option that changes the result (format, fields, labels, split, cleaning), so a changed file or
option is prepared again and an unchanged one is not. When `config.data.clean.enabled`, the
same builder also re-writes a tfds catalog dataset (or the embedded corpus) through the
cleaning steps, keyed by the upstream dataset's identity.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging as pylogging
import os
from collections.abc import Iterator, Sequence

import tensorflow_datasets as tfds
from absl import logging

from jaxlm.data import augment, cleaning, readers, stdlib_docs
from jaxlm.data.readers import DataError, ReadOptions, split_documents

LOCAL_NAME = "jaxlm_local_text"
DOC_UNITS = readers.DOC_UNITS
__all__ = ["DataError", "split_documents", "get_builder", "DataSource", "data_source",
           "iter_texts"]


def expand_paths(spec: str, field: str = "data.path") -> list[str]:
  """Comma-separated files/globs to a list of existing files (globs sorted, no repeats)."""
  paths: list[str] = []
  for part in [p.strip() for p in spec.split(",") if p.strip()]:
    part = os.path.expanduser(part)
    matches = sorted(glob.glob(part)) if glob.has_magic(part) else [part]
    if not matches:
      raise DataError(f"config.{field}: no file matches {part!r}. Fix: check the glob.")
    for m in matches:
      if not os.path.isfile(m):
        raise DataError(f"config.{field}: {m!r} does not exist or is not a file. "
                        "Fix: give an existing file (or a glob).")
      if os.path.abspath(m) not in paths:
        paths.append(os.path.abspath(m))
  if not paths:
    raise DataError(f"config.{field} is empty. Fix: give one or more files or globs.")
  return paths


@dataclasses.dataclass(eq=False)
class LocalTextConfig(tfds.core.BuilderConfig):
  """Files (or an upstream tfds dataset) and options; `name` is their content hash."""

  paths: Sequence[str] = ()
  doc_unit: str = "file"
  val_fraction: float = 0.05
  val_split: str = "hash"
  eval_paths: Sequence[str] = ()
  target_paths: Sequence[str] = ()
  eval_target_paths: Sequence[str] = ()
  read: ReadOptions = ReadOptions()
  clean: dict | None = None  # Cleaning config (None = off).
  upstream: dict | None = None  # {name, data_dir, splits}: re-write a tfds dataset.
  augment: dict | None = None  # CDA / canaries (jaxlm.data.augment; None = off).

  def __repr__(self) -> str:  # tfds logs it on every load; keep it to one short line.
    what = self.upstream["name"] if self.upstream else ", ".join(
        os.path.basename(p) for p in [*self.paths, *self.eval_paths])
    return f"LocalTextConfig({self.name}: {self.read.format} {what})"


def _hash_files(h, paths: Sequence[str]) -> None:
  for p in paths:
    with open(p, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    h.update(b"\0file\0")


def _clean_options(d) -> dict | None:
  clean = d.get("clean") if hasattr(d, "get") else None
  if clean is None or not clean.get("enabled", False):
    return None
  out = clean.to_dict() if hasattr(clean, "to_dict") else dict(clean)
  out.pop("enabled", None)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(out.items())}


def local_config(d, upstream: tfds.core.DatasetBuilder | None = None) -> LocalTextConfig:
  """The builder config for `config.data`: files + options, named by their hash."""
  opts = ReadOptions.from_config(d)
  opts.check()
  get = lambda k: d.get(k, "") if hasattr(d, "get") else getattr(d, k, "")
  kw: dict = {}
  if upstream is None:
    if opts.format in ("text", "parallel") and (opts.label_key or opts.target_key):
      raise DataError(f"config.data.label_key/target_key name fields, but data.format="
                      f"{opts.format!r} files have none. Fix: use format jsonl/tsv/csv (or "
                      "parallel with data.target_path), or clear the keys.")
    kw["paths"] = tuple(expand_paths(d.path))
    if get("eval_path"):
      kw["eval_paths"] = tuple(expand_paths(get("eval_path"), "data.eval_path"))
    if opts.format == "parallel":
      if not get("target_path"):
        raise DataError("config.data.format='parallel' needs config.data.target_path (the "
                        "line-aligned target file(s)).")
      kw["target_paths"] = tuple(expand_paths(get("target_path"), "data.target_path"))
      if kw.get("eval_paths"):
        kw["eval_target_paths"] = tuple(expand_paths(get("eval_target_path"),
                                                     "data.eval_target_path"))
  else:
    splits = {s: {"examples": upstream.info.splits[s].num_examples,
                  "bytes": upstream.info.splits[s].num_bytes} for s in _upstream_splits(d)}
    kw["upstream"] = {"name": d.name, "data_dir": str(upstream.data_dir_root), "splits": splits,
                      "full_name": upstream.info.full_name,
                      "content": dict(upstream.info.metadata or {}).get("content_sha256", "")}
  if d.val_split not in ("hash", "tail"):
    raise DataError(f"config.data.val_split={d.val_split!r} is not 'hash' or 'tail'.")
  options = {"read": dataclasses.asdict(opts), "val_fraction": d.val_fraction,
             "val_split": d.val_split, "clean": _clean_options(d), "upstream": kw.get("upstream"),
             "layout": [len(kw.get(k, ())) for k in ("paths", "eval_paths", "target_paths")]}
  if augment.options(d) is not None:  # Only when on: existing datasets keep their hash.
    options["augment"] = augment.options(d)
  h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
  for key in ("paths", "eval_paths", "target_paths", "eval_target_paths"):
    _hash_files(h, kw.get(key, ()))
    h.update(key.encode())
  return LocalTextConfig(name="h" + h.hexdigest()[:20], doc_unit=opts.doc_unit,
                         val_fraction=d.val_fraction, val_split=d.val_split, read=opts,
                         clean=options["clean"], augment=options.get("augment"), **kw)


def _upstream_splits(d) -> list[str]:
  return list(dict.fromkeys([d.train_split, d.eval_split]))


class JaxlmLocalText(tfds.core.GeneratorBasedBuilder):
  """Local files (or a cleaned tfds dataset) as a tfds dataset with train/validation splits."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "Plain text; split by document hash or by tail.",
                   "1.1.0": "jsonl/tsv/csv/parallel, labels, targets, eval files, cleaning.",
                   "1.2.0": "CRLF/CR line endings read as LF; UTF-16/32 with a BOM decoded."}
  BUILDER_CONFIGS: list = []

  def _info(self) -> tfds.core.DatasetInfo:
    cfg: LocalTextConfig = self.builder_config
    features = {"text": tfds.features.Text()}
    if cfg.read.label_key:
      features["label"] = tfds.features.ClassLabel(names=list(cfg.read.label_names))
    if cfg.read.target_key or cfg.read.format == "parallel":
      features["target"] = tfds.features.Text()
    # Files keep their order (tfds would shuffle by key): eval reads in order, `tail` is a tail.
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                          metadata=tfds.core.MetadataDict(),
                                          disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg: LocalTextConfig = self.builder_config
    stats: dict = {}
    if cfg.upstream:
      splits = _read_upstream(cfg)
    elif cfg.eval_paths:
      splits = {"train": readers.read_examples(cfg.paths, cfg.read, cfg.target_paths, stats),
                "validation": readers.read_examples(cfg.eval_paths, cfg.read,
                                                    cfg.eval_target_paths, stats)}
    else:
      splits = _split(cfg, stats)
    if stats.get("invalid_utf8_bytes"):
      logging.warning("Replaced %d invalid UTF-8 bytes by U+FFFD in %s.",
                      stats["invalid_utf8_bytes"], ", ".join(stats["invalid_utf8_files"]))
    self.info.metadata["paths"] = list(cfg.paths) + list(cfg.eval_paths)
    self.info.metadata["read_stats"] = stats
    splits, aug_report = augment.before_cleaning(splits, cfg.augment)  # Canaries.
    if cfg.clean is not None:
      splits, report = clean_splits(splits, cfg.clean)
      self.info.metadata["clean_report"] = report
      logging.info("%s", cleaning.format_report(report, examples=False))
    splits, cda_report = augment.after_cleaning(splits, cfg.augment)  # CDA.
    if cfg.augment is not None:
      self.info.metadata["augment_report"] = {**aug_report, **cda_report}
      logging.info("%s", augment.format_report(self.info.metadata["augment_report"]))
    for name, examples in splits.items():
      if not examples:
        raise DataError(
            f"config.data: the {name!r} split is empty ({sum(map(len, splits.values()))} "
            "examples in all, after cleaning if enabled). Fix: use more data, a finer "
            "data.doc_unit ('paragraph' or 'line'), a different data.val_fraction, or looser "
            "data.clean settings.")
    return {name: self._generate_examples(ex) for name, ex in splits.items()}

  def _generate_examples(self, examples):
    yield from enumerate(examples)


def _split(cfg: LocalTextConfig, stats: dict) -> dict[str, list[dict]]:
  """One set of files to train/validation: by document hash or the tail fraction."""
  if cfg.val_split == "tail" and cfg.read.format == "text" and cfg.doc_unit != "file":
    # Plain text is cut by characters, so the split is the same whatever the doc unit.
    whole = "\n\n".join(readers.read_file(p, cfg.read, stats) for p in cfg.paths)
    cut = int(len(whole) * (1 - cfg.val_fraction))
    return {"train": [{"text": t} for t in split_documents(whole[:cut], cfg.doc_unit)],
            "validation": [{"text": t} for t in split_documents(whole[cut:], cfg.doc_unit)]}
  examples = readers.read_examples(cfg.paths, cfg.read, cfg.target_paths, stats)
  if cfg.val_split == "tail":
    cut = max(1, int(round(len(examples) * (1 - cfg.val_fraction))))
    return {"train": examples[:cut], "validation": examples[cut:]}
  flags = [stdlib_docs.is_validation(ex["text"], cfg.val_fraction) for ex in examples]
  return {"train": [e for e, v in zip(examples, flags, strict=True) if not v],
          "validation": [e for e, v in zip(examples, flags, strict=True) if v]}


def _read_upstream(cfg: LocalTextConfig) -> dict[str, list[dict]]:
  """The configured splits of a prepared tfds dataset, in canonical example form."""
  up = cfg.upstream
  builder = _catalog_builder(up["name"], up["data_dir"])
  out = {}
  for split in up["splits"]:
    src = _canonical(builder, builder.as_data_source(split=split), cfg.read)
    out[split] = [{k: decode_text(v) if k != "label" else int(v) for k, v in src[i].items()}
                  for i in range(len(src))]
  return out


def clean_splits(splits: dict[str, list[dict]], clean: dict) -> tuple[dict, dict]:
  """Runs the cleaning steps over all splits at once (train first, so dedup drops eval
  copies of training documents); labels and targets follow their text."""
  order = list(splits)
  flat = [(name, ex) for name in order for ex in splits[name]]
  texts, index, report = cleaning.clean_indexed([ex["text"] for _, ex in flat], clean)
  out: dict[str, list[dict]] = {name: [] for name in order}
  for text, i in zip(texts, index, strict=True):
    name, ex = flat[i]
    out[name].append({**ex, "text": text})
  report["splits"] = {n: {"docs_in": len(splits[n]), "docs_out": len(out[n])} for n in order}
  return out, report


def _data_dir(d) -> str | None:
  return os.path.expanduser(d.data_dir) if d.data_dir else None


def _catalog_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # tfds raises several types for unknown names.
    first = str(e).strip().split("\n")[0][:300]
    raise DataError(f"config.data.name={name!r}: tfds cannot find it ({first}). Fix: use a "
                    "tfds catalog name, or config.data.path for local files.") from e
  if not builder.is_prepared():
    raise DataError(
        f"config.data.name={name!r} is not prepared in {builder.data_dir_root}. This "
        "machine cannot download it now. Fix: prepare it where there is network ("
        f"`tfds build {name} --file_format=array_record --data_dir=DIR`) and pass "
        "--config.data.data_dir=DIR, or use local files with --config.data.path.")
  return builder


class _QuietTfdsNotices(pylogging.Filter):
  """Drops tfds's per-call notices about every local dataset (one per split, per read)."""

  NOTICES = ("Using custom data configuration", "Load dataset info from")

  def filter(self, record: pylogging.LogRecord) -> bool:
    return not str(record.msg).startswith(self.NOTICES)


logging.get_absl_logger().addFilter(_QuietTfdsNotices())


def get_builder(d, prepare: bool = True) -> tfds.core.DatasetBuilder:
  """The prepared tfds builder for `config.data` (preparing it once if it is ours)."""
  tfds.disable_progress_bar()
  if d.path:
    cfg = local_config(d)
  else:
    if d.name == stdlib_docs.NAME:
      builder = _prepared(lambda: stdlib_docs.JaxlmStdlibDocs(data_dir=_data_dir(d),
                                                              file_format="array_record"))
    elif not d.name:
      raise DataError("config.data.name and config.data.path are both empty. Fix: name a "
                      "tfds dataset or give local files.")
    else:
      builder = _catalog_builder(d.name, _data_dir(d))
    if _clean_options(d) is None and augment.options(d) is None:
      return builder
    for split in _upstream_splits(d):
      _check_split(builder, split)
    cfg = local_config(d, upstream=builder)
  make = lambda: JaxlmLocalText(config=cfg, data_dir=_data_dir(d), file_format="array_record")
  return _prepared(make) if prepare else make()


def _prepared(make):
  """`make()`'s builder, prepared. Another process preparing the same dataset at the same
  moment (two runs of a sweep on one data folder) is not an error: tfds renames its finished
  folder into place, the second rename fails, and that process uses the first one's."""
  builder = make()
  if builder.is_prepared():
    return builder
  try:
    builder.download_and_prepare()
  except FileExistsError:
    builder = make()
    if not builder.is_prepared():
      raise
    logging.info("%s was prepared by another process meanwhile; using it.", builder.name)
  return builder


def _check_split(builder, split: str) -> None:
  if split not in builder.info.splits:
    raise DataError(f"Split {split!r} is not in {builder.name} (has "
                    f"{sorted(builder.info.splits)}). Fix: set config.data.train_split/"
                    "eval_split.")


class _Canonical(Sequence):
  """A tfds data source with its features renamed to `text` / `label` / `target`."""

  def __init__(self, src, mapping: dict[str, str]):
    self._src, self._map = src, mapping

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, i):
    ex = self._src[i]
    return {new: ex[old] for new, old in self._map.items()}


def _canonical(builder, src, opts: ReadOptions):
  """`src` as canonical examples; our own builders already are."""
  if isinstance(builder, (JaxlmLocalText, stdlib_docs.JaxlmStdlibDocs)):
    return src
  mapping = {"text": opts.text_key}
  if opts.label_key:
    mapping["label"] = opts.label_key
  if opts.target_key:
    mapping["target"] = opts.target_key
  features = builder.info.features
  for new, old in mapping.items():
    if old not in features:
      raise DataError(f"{builder.name} has no feature {old!r} (has {sorted(features)}). Fix: "
                      f"set config.data.{new}_key to one of them.")
  if mapping == {"text": "text"}:
    return src
  return _Canonical(src, mapping)


class DataSource:
  """`config.data`'s dataset, prepared and opened once: the `Run` hands it to all that reads
  the data (pipeline, lanes, tasks): files hashed once per run, not per shard and split."""

  def __init__(self, d, builder: tfds.core.DatasetBuilder | None = None):
    self.config = d
    self.builder = builder if builder is not None else get_builder(d)
    self._splits: dict[str, object] = {}

  def split(self, name: str):
    """A random-access source of canonical examples, with a clear error if absent."""
    if name not in self._splits:
      _check_split(self.builder, name)
      try:
        src = self.builder.as_data_source(split=name)
      except NotImplementedError as e:
        raise DataError(f"{self.builder.name} is prepared as {self.builder.info.file_format}, "
                        "which needs TensorFlow to read. Fix: prepare it with "
                        "--file_format=array_record.") from e
      self._splits[name] = _canonical(self.builder, src, ReadOptions.from_config(self.config))
    return self._splits[name]

  def texts(self, split: str, limit: int = 0) -> Iterator[str]:
    """Documents of a split as str (for tokenizer training and inspection)."""
    src = self.split(split)
    n = len(src) if not limit else min(limit, len(src))
    for i in range(n):
      yield decode_text(src[i]["text"])


def data_source(d, split: str):
  """A random-access source of canonical examples for `split` (opens the dataset)."""
  return DataSource(d).split(split)


def opened(d, source: DataSource | None = None) -> DataSource:
  """`source` if given (the run's), else `d`'s dataset opened now."""
  return source if source is not None else DataSource(d)


def iter_texts(d, split: str, limit: int = 0) -> Iterator[str]:
  """Documents of a split as str (opens the dataset; a run uses its `DataSource.texts`)."""
  return DataSource(d).texts(split, limit)


def decode_text(value) -> str:
  return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
