"""Corpus cleaning: normalisation, PII scrubbing, quality filters and deduplication.

`clean_documents` runs the steps chosen in `clean_config()` in a fixed order
(normalize -> privacy -> quality -> exact dedup -> near dedup) and returns the
kept documents with a JSON-serializable report of what each step did, so a
run can log exactly how its training text differs from the raw source. The
defaults only normalise (NFC, control characters, whitespace) and drop exact
duplicates; every other filter is off until configured.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

import ml_collections

from jaxlm.data import dedup, privacy

FORMS = ("NFC", "NFKC", "none")
PII_MODES = ("none", "scrub", "drop")
STEPS = ("normalize", "privacy", "quality", "exact_dedup", "near_dedup")
# Quality filters in the order `quality_check` applies them; names are the config fields.
QUALITY_FILTERS = (
    "min_chars",
    "max_chars",
    "min_alpha_ratio",
    "max_repeated_line_ratio",
    "max_repeated_ngram_ratio",
)
MAX_EXAMPLES = 3
EXAMPLE_CHARS = 200


def clean_config() -> ml_collections.ConfigDict:
  """Defaults for every cleaning step; only normalisation and exact dedup are active."""
  c = ml_collections.ConfigDict()
  c.normalize = "NFC"  # 'NFC' | 'NFKC' | 'none'.
  c.strip_control = True  # Drop control characters except \n and \t; \r\n and \r -> \n.
  c.collapse_whitespace = True  # Off for code, where indentation matters.
  c.exact_dedup = True
  c.near_dedup = False
  c.near_dedup_threshold = 0.8  # Estimated Jaccard of shingle sets.
  c.minhash_num_perm = 128
  c.shingle_size = 5
  c.shingle_unit = "word"  # 'word' | 'char'.
  c.minhash_seed = 0
  c.min_chars = 0
  c.max_chars = 0  # 0 = no limit.
  c.min_alpha_ratio = 0.0  # Letters / non-whitespace characters.
  c.max_repeated_line_ratio = 1.0
  c.max_repeated_ngram_ratio = 1.0
  c.repeated_ngram_n = 5  # Words.
  c.pii = "none"  # 'none' | 'scrub' (replace by <EMAIL>, ...) | 'drop' (remove the document).
  c.pii_kinds = ("email", "phone", "ip", "credit_card")
  return c


_DEFAULTS = clean_config().to_dict()

# --- normalisation --------------------------------------------------------------------------

_HSPACE_RE = re.compile(r"[^\S\n]+")  # Whitespace other than newline (tabs, NBSP, \u3000...).
_SPACE_AROUND_NL_RE = re.compile(r" ?\n ?")
_MANY_NL_RE = re.compile(r"\n{3,}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # Unicode Cc minus \t and \n.


def normalize(
    text: str,
    form: str = "NFC",
    strip_control: bool = True,
    collapse_whitespace: bool = True,
) -> str:
  """Unicode-normalised, control-free text with tidy whitespace.

  NFC merges composed/decomposed forms so equal text is equal bytes (and
  dedups); NFKC also folds compatibility characters (ligatures, full-width
  letters, NBSP). `strip_control` turns \\r\\n and \\r into \\n and drops other
  control characters but keeps \\n and \\t. `collapse_whitespace` turns runs of
  non-newline whitespace into one space, drops spaces at line ends and starts
  (indentation too), keeps single newlines and paragraph breaks but collapses
  3+ newlines into 2, and strips the ends.
  """
  if form not in FORMS:
    raise ValueError(f"Normalization form {form!r} is not one of {FORMS}.")
  if form != "none":
    text = unicodedata.normalize(form, text)
  if strip_control:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL_RE.sub("", text)
  if collapse_whitespace:
    text = _HSPACE_RE.sub(" ", text)
    text = _SPACE_AROUND_NL_RE.sub("\n", text)
    text = _MANY_NL_RE.sub("\n\n", text)
    text = text.strip()
  return text


# --- quality measures -----------------------------------------------------------------------


def alpha_ratio(text: str) -> float:
  """Fraction of non-whitespace characters that are letters (0.0 for blank text).

  Low values flag tables of numbers, markup and encoding debris.
  """
  chars = [c for c in text if not c.isspace()]
  return sum(c.isalpha() for c in chars) / len(chars) if chars else 0.0


def repeated_line_ratio(text: str) -> float:
  """Fraction of non-blank lines that repeat an earlier line (after stripping).

  High values flag navigation menus, boilerplate and generated spam.
  """
  lines = [s for s in (line.strip() for line in text.split("\n")) if s]
  return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0


def repeated_ngram_ratio(text: str, n: int = 5) -> float:
  """Fraction of word n-grams (lower-cased, whitespace-split) that occurred earlier.

  Catches repetition within lines that `repeated_line_ratio` misses. Texts
  with fewer than n words score 0.0.
  """
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}.")
  words = text.lower().split()
  grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
  return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def _get(cfg, name: str):
  """Config value, falling back to the default so partial configs and dicts work."""
  if isinstance(cfg, Mapping):
    return cfg[name] if name in cfg else _DEFAULTS[name]
  return getattr(cfg, name, _DEFAULTS[name])


def _quality_on(cfg) -> bool:
  return bool(
      _get(cfg, "min_chars")
      or _get(cfg, "max_chars")
      or _get(cfg, "min_alpha_ratio") > 0
      or _get(cfg, "max_repeated_line_ratio") < 1
      or _get(cfg, "max_repeated_ngram_ratio") < 1
  )


def quality_check(text: str, cfg=None) -> str | None:
  """Name of the first failing quality filter (see QUALITY_FILTERS), or None if all pass.

  A filter at its default (0 / 0.0 / 1.0) is off.
  """
  cfg = {} if cfg is None else cfg
  min_chars, max_chars = _get(cfg, "min_chars"), _get(cfg, "max_chars")
  if min_chars and len(text) < min_chars:
    return "min_chars"
  if max_chars and len(text) > max_chars:
    return "max_chars"
  min_alpha = _get(cfg, "min_alpha_ratio")
  if min_alpha > 0 and alpha_ratio(text) < min_alpha:
    return "min_alpha_ratio"
  max_lines = _get(cfg, "max_repeated_line_ratio")
  if max_lines < 1 and repeated_line_ratio(text) > max_lines:
    return "max_repeated_line_ratio"
  max_ngrams = _get(cfg, "max_repeated_ngram_ratio")
  n = _get(cfg, "repeated_ngram_n")
  if max_ngrams < 1 and repeated_ngram_ratio(text, n) > max_ngrams:
    return "max_repeated_ngram_ratio"
  return None


# --- pipeline -------------------------------------------------------------------------------


def _check_config(cfg) -> None:
  form, pii = _get(cfg, "normalize"), _get(cfg, "pii")
  if form not in FORMS:
    raise ValueError(f"cleaning normalize={form!r} is not one of {FORMS}.")
  if pii not in PII_MODES:
    raise ValueError(f"cleaning pii={pii!r} is not one of {PII_MODES}.")
  unknown = [k for k in _get(cfg, "pii_kinds") if k not in privacy.KINDS]
  if unknown:
    raise ValueError(f"cleaning pii_kinds has unknown kinds {unknown}; use {privacy.KINDS}.")
  if _get(cfg, "shingle_unit") not in dedup.UNITS:
    raise ValueError(f"cleaning shingle_unit must be one of {dedup.UNITS}.")
  if not 0.0 < _get(cfg, "near_dedup_threshold") <= 1.0:
    raise ValueError("cleaning near_dedup_threshold must be in (0, 1].")


def _short(text: str, pii_kinds: tuple[str, ...] | None) -> str:
  """A report snippet: PII scrubbed when the privacy step is on, cut to ~200 chars."""
  if pii_kinds:
    text = privacy.scrub_pii(text, pii_kinds)[0]
  return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "..."


def _step(enabled: bool) -> dict:
  return {"enabled": enabled, "removed": 0, "changed": 0, "examples": []}


def clean_documents(docs: Iterable[str], cfg=None) -> tuple[list[str], dict]:
  """Kept documents (in input order) and a JSON-serializable report.

  See `clean_indexed` for the report's fields.
  """
  texts, _, report = clean_indexed(docs, cfg)
  return texts, report


def clean_indexed(docs: Iterable[str], cfg=None) -> tuple[list[str], list[int], dict]:
  """Kept documents, the input index of each (to carry labels/targets along), and a report.

  Report: `docs_in/out`, `chars_in/out`, `pii_counts` per kind, and `steps`,
  per step `enabled`, `removed`, `changed`, up to 3 `examples` (input `index`
  plus truncated text; PII in examples is scrubbed whenever `pii` is on), and
  `reasons` (quality) or `duplicate_of` indices in examples (dedup).
  """
  cfg = clean_config() if cfg is None else cfg
  _check_config(cfg)
  texts = list(docs)
  index = list(range(len(texts)))  # Input position of each surviving document.
  pii_mode, form = _get(cfg, "pii"), _get(cfg, "normalize")
  pii_kinds = tuple(_get(cfg, "pii_kinds"))
  example_kinds = pii_kinds if pii_mode != "none" else None
  strip, collapse = _get(cfg, "strip_control"), _get(cfg, "collapse_whitespace")
  steps = {
      "normalize": _step(form != "none" or strip or collapse),
      "privacy": _step(pii_mode != "none"),
      "quality": {**_step(_quality_on(cfg)), "reasons": dict.fromkeys(QUALITY_FILTERS, 0)},
      "exact_dedup": _step(bool(_get(cfg, "exact_dedup"))),
      "near_dedup": _step(bool(_get(cfg, "near_dedup"))),
  }
  report = {
      "docs_in": len(texts),
      "chars_in": sum(map(len, texts)),
      "pii_counts": dict.fromkeys(pii_kinds if pii_mode != "none" else (), 0),
      "steps": steps,
  }

  def add_example(step: dict, example: dict) -> None:
    if len(step["examples"]) < MAX_EXAMPLES:
      step["examples"].append(example)

  def keep_only(mask: list[bool]) -> None:
    texts[:] = [t for t, k in zip(texts, mask, strict=True) if k]
    index[:] = [i for i, k in zip(index, mask, strict=True) if k]

  st = steps["normalize"]
  if st["enabled"]:
    for j, t in enumerate(texts):
      new = normalize(t, form, strip, collapse)
      if new != t:
        st["changed"] += 1
        before, after = _short(t, example_kinds), _short(new, example_kinds)
        add_example(st, {"index": index[j], "before": before, "after": after})
        texts[j] = new

  st = steps["privacy"]
  if st["enabled"]:
    mask = []
    for j, t in enumerate(texts):
      new, counts = privacy.scrub_pii(t, pii_kinds)
      found = sum(counts.values())
      for k, v in counts.items():
        report["pii_counts"][k] += v
      mask.append(not (found and pii_mode == "drop"))
      if found:
        st["removed" if pii_mode == "drop" else "changed"] += 1
        shown = {k: v for k, v in counts.items() if v}
        add_example(st, {"index": index[j], "text": _short(new, None), "counts": shown})
        if pii_mode == "scrub":
          texts[j] = new
    keep_only(mask)

  st = steps["quality"]
  if st["enabled"]:
    mask = []
    for j, t in enumerate(texts):
      reason = quality_check(t, cfg)
      mask.append(reason is None)
      if reason is not None:
        st["removed"] += 1
        st["reasons"][reason] += 1
        add_example(st, {"index": index[j], "reason": reason, "text": _short(t, example_kinds)})
    keep_only(mask)

  for name in ("exact_dedup", "near_dedup"):
    st = steps[name]
    if not st["enabled"]:
      continue
    if name == "exact_dedup":
      dup_of = dedup.exact_duplicate_of(texts)
    else:
      dup_of = dedup.near_duplicate_of(
          texts,
          threshold=_get(cfg, "near_dedup_threshold"),
          num_perm=_get(cfg, "minhash_num_perm"),
          shingle_size=_get(cfg, "shingle_size"),
          seed=_get(cfg, "minhash_seed"),
          unit=_get(cfg, "shingle_unit"),
      )
    for j, d in enumerate(dup_of):
      if d >= 0:
        st["removed"] += 1
        add_example(
            st,
            {
                "index": index[j],
                "duplicate_of": index[d],
                "text": _short(texts[j], example_kinds),
                "kept": _short(texts[d], example_kinds),
            },
        )
    keep_only([d < 0 for d in dup_of])

  report["docs_out"] = len(texts)
  report["chars_out"] = sum(map(len, texts))
  return texts, index, report


def format_report(report: dict, examples: bool = True) -> str:
  """Multi-line human-readable summary of a `clean_documents` report."""
  din, dout, cin, cout = (report[k] for k in ("docs_in", "docs_out", "chars_in", "chars_out"))
  pct = 100.0 * (cin - cout) / cin if cin else 0.0
  lines = [
      f"cleaning: {din:,} -> {dout:,} documents (-{din - dout:,}), "
      f"{cin:,} -> {cout:,} characters (-{pct:.1f}%)"
  ]
  for name, st in report["steps"].items():
    if not st["enabled"]:
      lines.append(f"  {name:<12} off")
      continue
    line = f"  {name:<12} removed {st['removed']:,}, changed {st['changed']:,}"
    reasons = {k: v for k, v in st.get("reasons", {}).items() if v}
    if reasons:
      line += " (" + ", ".join(f"{k}: {v:,}" for k, v in reasons.items()) + ")"
    if name == "privacy":
      line += "; found " + ", ".join(f"{k}: {v:,}" for k, v in report["pii_counts"].items())
    lines.append(line)
    if examples:
      for ex in st["examples"]:
        shown = {k: v for k, v in ex.items() if k != "index"}
        text = ", ".join(
            f"{k}={_clip(v) if isinstance(v, str) else v}" for k, v in shown.items()
        )
        lines.append(f"      #{ex['index']}: {text}")
  return "\n".join(lines)


def _clip(s: str, n: int = 80) -> str:
  r = repr(s)
  return r if len(r) <= n else r[: n - 3] + "..."

