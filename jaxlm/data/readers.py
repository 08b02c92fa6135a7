"""Local files to examples: plain text, JSON lines, TSV/CSV with a header, parallel pairs.

Every reader returns example dicts with the same keys whatever the format:
`text` (str), plus `label` (int id) when `label_key` is set and `target` (str)
for parallel pairs or when `target_key` is set. Labels are mapped to ids
through the configured label set (`labels` by name, or `num_classes` for
integer labels), so a label outside it is an error naming the file and line,
never a silently wrong class. Bytes that are not UTF-8 are replaced by U+FFFD
(one per byte, counted) or rejected, as `encoding_errors` says; a UTF-16/32 file
with a byte-order mark is decoded as such, one without (NUL bytes) is refused.
Line endings are normalized (CRLF and lone CR become LF) before anything splits
lines or paragraphs. Malformed rows (an unclosed CSV quote, a field over
`MAX_FIELD_CHARS`, JSON nested too deeply) are errors naming the file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import Sequence

FORMATS = ("text", "jsonl", "tsv", "csv", "parallel")
ENCODING_ERRORS = ("replace", "strict")
DOC_UNITS = ("file", "paragraph", "line")
_ESCAPED_RE = re.compile("[\udc80-\udcff]")
MAX_FIELD_CHARS = 1 << 26  # Longest CSV/TSV field read (csv's own default is 128 KiB).
# Byte-order marks, longest first (a UTF-32-LE BOM starts with the UTF-16-LE one).
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


class DataError(ValueError):
  """Missing or malformed data; the message says what and how to fix it."""


@dataclasses.dataclass(frozen=True)
class ReadOptions:
  """How to turn files into examples (the `config.data` fields of the same names)."""

  format: str = "text"
  doc_unit: str = "file"
  text_key: str = "text"
  label_key: str = ""
  target_key: str = ""
  labels: tuple[str, ...] = ()
  num_classes: int = 0
  encoding_errors: str = "replace"

  @classmethod
  def from_config(cls, d) -> ReadOptions:
    get = lambda k, default: d.get(k, default) if hasattr(d, "get") else getattr(d, k, default)
    return cls(format=get("format", "text"), doc_unit=get("doc_unit", "file"),
               text_key=get("text_key", "text"), label_key=get("label_key", ""),
               target_key=get("target_key", ""),
               labels=tuple(str(x) for x in (get("labels", ()) or ())),
               num_classes=int(get("num_classes", 0) or 0),
               encoding_errors=get("encoding_errors", "replace"))

  def check(self) -> None:
    if self.format not in FORMATS:
      raise DataError(f"config.data.format={self.format!r} is not one of {FORMATS}.")
    if self.encoding_errors not in ENCODING_ERRORS:
      raise DataError(f"config.data.encoding_errors={self.encoding_errors!r} is not one of "
                      f"{ENCODING_ERRORS}.")
    if self.doc_unit not in DOC_UNITS:
      raise DataError(f"config.data.doc_unit={self.doc_unit!r} is not one of {DOC_UNITS}.")
    if self.label_key and not self.labels and self.num_classes <= 0:
      raise DataError(f"config.data.label_key={self.label_key!r} is set but the label set is "
                      "not. Fix: set config.data.labels (names, id = position) or "
                      "config.data.num_classes (integer labels 0..n-1).")
    if self.labels and len(set(self.labels)) != len(self.labels):
      raise DataError(f"config.data.labels={self.labels} has duplicates.")

  @property
  def label_names(self) -> tuple[str, ...]:
    return self.labels or tuple(str(i) for i in range(self.num_classes))


def _decode_bom(data: bytes, path: str, errors: str, stats: dict) -> str | None:
  """The text of a UTF-16/32 file with a byte-order mark (None if it has none); a file with
  NUL bytes and no mark is refused (UTF-16 without a BOM would read as garbage)."""
  for bom, codec in _BOMS:
    if data.startswith(bom):
      try:
        text = data[len(bom):].decode(codec, errors)
      except UnicodeDecodeError as e:
        raise DataError(f"{path}: starts with a {codec.upper()} byte-order mark but byte "
                        f"{e.start + len(bom)} is not valid {codec.upper()} ({e.reason}). Fix: "
                        "convert the file to UTF-8, or set config.data.encoding_errors="
                        "'replace'.") from e
      stats.setdefault("decoded_files", {})[path] = codec
      return text
  head = data[:4096]
  if head.count(0) > len(head) // 8:
    raise DataError(f"{path}: {head.count(0)} of the first {len(head)} bytes are NUL: UTF-16 or "
                    "UTF-32 without a byte-order mark, or not text. Fix: convert it to UTF-8 "
                    "(e.g. `iconv -f UTF-16LE -t UTF-8`).")
  return None


def decode(data: bytes, path: str, errors: str, stats: dict) -> str:
  """Text of a file: UTF-8 (invalid bytes replaced, counted in `stats`, or rejected), or
  UTF-16/32 when it starts with that byte-order mark."""
  text = _decode_bom(data, path, errors, stats)
  if text is not None:
    return text
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    if errors == "strict":
      raise DataError(f"{path}: byte {e.start} is not valid UTF-8 ({e.reason}). Fix: convert "
                      "the file to UTF-8, or set config.data.encoding_errors='replace' to "
                      "replace bad bytes by U+FFFD.") from e
  text = data.decode("utf-8", "surrogateescape")  # One lone surrogate per bad byte.
  n = len(_ESCAPED_RE.findall(text))
  stats["invalid_utf8_bytes"] = stats.get("invalid_utf8_bytes", 0) + n
  stats.setdefault("invalid_utf8_files", []).append(path)
  return _ESCAPED_RE.sub("\ufffd", text)


def read_file(path: str, opts: ReadOptions, stats: dict) -> str:
  with open(path, "rb") as f:
    text = decode(f.read(), path, opts.encoding_errors, stats).removeprefix("\ufeff")  # BOM.
  text = text.replace("\r\n", "\n").replace("\r", "\n")  # CRLF (Windows), CR (old Mac).
  if not text.strip():
    raise DataError(f"{path} is empty (no text). Fix: remove it from config.data.path/"
                    "eval_path or point to non-empty files.")
  return text


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


def label_id(value, opts: ReadOptions, where: str) -> int:
  """A raw label (name or integer) to its id in the configured label set."""
  s = str(value).strip()
  if opts.labels:
    if s in opts.labels:
      return opts.labels.index(s)
  else:
    try:
      i = int(s)
    except ValueError:
      i = -1
    if 0 <= i < opts.num_classes:
      return i
  raise DataError(f"{where}: label {s!r} is not in the label set {list(opts.label_names)}. "
                  "Fix: correct the data, or set config.data.labels / config.data.num_classes "
                  "to include it.")


def _example(fields: dict, opts: ReadOptions, where: str) -> dict:
  """A row's fields (names -> raw values) to a canonical example dict."""

  def field(key: str, what: str):
    if key not in fields:
      raise DataError(f"{where}: no {what} field {key!r} (has {sorted(fields)}). Fix: set "
                      f"config.data.{what}_key to one of them.")
    return fields[key]

  text = field(opts.text_key, "text")
  if not isinstance(text, str):
    raise DataError(f"{where}: field {opts.text_key!r} is {type(text).__name__}, not text.")
  ex = {"text": text}
  if opts.label_key:
    ex["label"] = label_id(field(opts.label_key, "label"), opts, where)
  if opts.target_key:
    target = field(opts.target_key, "target")
    ex["target"] = target if isinstance(target, str) else str(target)
  return ex


def read_jsonl(path: str, opts: ReadOptions, stats: dict) -> list[dict]:
  out = []
  for n, line in enumerate(read_file(path, opts, stats).split("\n"), 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{n}: not valid JSON ({e.msg}). Fix: one JSON object per "
                      "line.") from e
    except RecursionError as e:
      raise DataError(f"{path}:{n}: JSON nested too deeply to read (Python's recursion "
                      "limit). Fix: flatten the line to an object whose text field is a "
                      "string.") from e
    if not isinstance(obj, dict):
      raise DataError(f"{path}:{n}: a JSON {type(obj).__name__}, not an object.")
    out.append(_example(obj, opts, f"{path}:{n}"))
  return out


def _rows(reader, path: str, fmt: str):
  """(first line, row) of each row; csv errors (an unclosed quote, a field too long) become
  errors naming the file and the line the row starts on."""
  while True:
    start = reader.line_num + 1
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      hint = (f"a field over {MAX_FIELD_CHARS:,} characters (readers.MAX_FIELD_CHARS)"
              if "field larger" in str(e) else
              "a quote that is never closed (or text after a closing quote) joins the rows "
              "after it; quote fields as \"...\" and double any quote inside (\"\")")
      raise DataError(f"{path}:{start}: malformed {fmt.upper()} row starting here ({e}; "
                      f"read up to line {reader.line_num}): {hint}. Fix: correct the file "
                      "there.") from e
    yield start, row


def read_table(path: str, opts: ReadOptions, stats: dict) -> list[dict]:
  """TSV (unquoted, GLUE style) or CSV (RFC 4180 quoting); the first row is the header."""
  text = read_file(path, opts, stats)
  limit = csv.field_size_limit(MAX_FIELD_CHARS)
  try:
    return _read_table(path, text, opts)
  finally:
    csv.field_size_limit(limit)


def _read_table(path: str, text: str, opts: ReadOptions) -> list[dict]:
  if opts.format == "tsv":
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
  else:
    reader = csv.reader(io.StringIO(text), strict=True)
  rows = _rows(reader, path, opts.format)
  header = next(rows)[1]
  if len(set(header)) != len(header):
    raise DataError(f"{path}: the header {header} repeats a column name.")
  for col, what in ((opts.text_key, "text"), (opts.label_key, "label"),
                    (opts.target_key, "target")):
    if col and col not in header:
      raise DataError(f"{path}: no column {col!r} in the header {header}. Fix: set "
                      f"config.data.{what}_key to one of them (the first row must be a "
                      "header).")
  out = []
  for start, row in rows:
    if not any(c.strip() for c in row):
      continue
    where = f"{path}:{start}"
    if len(row) != len(header):
      raise DataError(f"{where}: {len(row)} columns, the header has {len(header)}. Fix: check "
                      f"the delimiter (config.data.format={opts.format!r}) and quoting.")
    out.append(_example(dict(zip(header, row, strict=True)), opts, where))
  return out


def read_parallel(paths: Sequence[str], target_paths: Sequence[str], opts: ReadOptions,
                  stats: dict) -> list[dict]:
  """Line-aligned source/target files (file i of each list pairs up) to examples."""
  if len(paths) != len(target_paths):
    raise DataError(f"config.data.format='parallel': {len(paths)} source file(s) but "
                    f"{len(target_paths)} target file(s). Fix: give config.data.target_path "
                    "(and eval_target_path) with one target file per source file, same order.")
  out = []
  for src, tgt in zip(paths, target_paths, strict=True):
    a = read_file(src, opts, stats).rstrip("\n").split("\n")
    b = read_file(tgt, opts, stats).rstrip("\n").split("\n")
    if len(a) != len(b):
      raise DataError(f"{src} has {len(a)} lines but {tgt} has {len(b)}: parallel files must "
                      "be line-aligned. Fix: check the pairing of data.path and "
                      "data.target_path.")
    for s, t in zip(a, b, strict=True):
      if s.strip() and t.strip():
        out.append({"text": s, "target": t})
      else:
        stats["skipped_empty_pairs"] = stats.get("skipped_empty_pairs", 0) + 1
  return out


def read_examples(paths: Sequence[str], opts: ReadOptions, target_paths: Sequence[str] = (),
                  stats: dict | None = None) -> list[dict]:
  """All examples of `paths` (in order) in the canonical form (see module docstring)."""
  opts.check()
  stats = {} if stats is None else stats
  if opts.format == "parallel":
    return read_parallel(paths, target_paths, opts, stats)
  out: list[dict] = []
  for p in paths:
    if opts.format == "text":
      out.extend({"text": t} for t in split_documents(read_file(p, opts, stats), opts.doc_unit))
    elif opts.format == "jsonl":
      out.extend(read_jsonl(p, opts, stats))
    else:
      out.extend(read_table(p, opts, stats))
  return out
