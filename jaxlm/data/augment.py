"""Training-data steps for bias and privacy measurement: CDA and canaries.

Both run where cleaning runs (`sources.JaxlmLocalText._split_generators`), on the
training split only, and their options are part of the prepared dataset's hash, so
changing them prepares the dataset again:

* **Canaries** (Carlini et al. 2019, "The Secret Sharer"): `data.canaries.counts`
  = (1, 4, 16) makes three canaries, `format` with a random secret of `digits`
  space-separated digits (|R| = 10^digits), and inserts canary i `counts[i]` times
  as its own document at seeded random positions of the training split. They are
  inserted *before* the cleaning steps, so exact-duplicate removal sees them like
  any repeated document. `make_canaries` regenerates them from the config, which
  is how `jaxlm.privacy` finds them; `record` writes them to `<workdir>/canaries.json`.
* **CDA** (Lu et al. 2018, counterfactual data augmentation): every training
  document containing a gendered word (`cda_words.PAIRS`, optionally first names)
  gets a copy with each such word swapped for its counterpart, case preserved;
  `data.cda.mode` = 'add' keeps both, 'substitute' keeps only the swapped copy.
  Runs after cleaning.
"""

from __future__ import annotations

import json
import os
import re

import ml_collections
import numpy as np
from etils import epath

from jaxlm.data import cda_words

CDA_MODES = ("none", "add", "substitute")
CANARIES_FILE = "canaries.json"


def cda_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "none"  # none | add (a swapped copy of each gendered document) | substitute.
  c.names = False  # Also swap paired first names (cda_words.NAME_PAIRS).
  return c


def canaries_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.counts = ()  # Repetitions of each canary, e.g. (1, 4, 16) = three canaries; () = off.
  c.format = "the random number is {}"  # '{}' receives the secret.
  c.digits = 9  # Secret length; |R| = 10^digits.
  c.seed = 0  # Secrets and insertion positions.
  return c


def options(d) -> dict | None:
  """The augmentation options that change the prepared dataset (None = no augmentation)."""
  cda = d.get("cda") if hasattr(d, "get") else None
  can = d.get("canaries") if hasattr(d, "get") else None
  out = {}
  if cda is not None and can is not None:
    check(d)
  if cda is not None and cda.mode != "none":
    out["cda"] = {"mode": cda.mode, "names": bool(cda.names)}
  if can is not None and tuple(can.counts):
    out["canaries"] = {"counts": [int(x) for x in can.counts], "format": can.format,
                       "digits": int(can.digits), "seed": int(can.seed)}
  if not out:
    return None
  out["train_split"] = d.train_split
  return out


def check(d) -> None:
  """Raises ValueError (naming the field and the fix) for bad augmentation options."""
  if d.cda.mode not in CDA_MODES:
    raise ValueError(f"config.data.cda.mode={d.cda.mode!r} is not one of {CDA_MODES}. Fix: "
                     "pick one of those.")
  c = d.canaries
  if any(int(x) < 1 for x in c.counts):
    raise ValueError(f"config.data.canaries.counts={tuple(c.counts)} has a count below 1. "
                     "Fix: use positive repetition counts, e.g. (1, 4, 16).")
  if tuple(c.counts) and (d.label_key or d.target_key or d.format == "parallel"):
    raise ValueError("config.data.canaries: canaries are language-model text; this data has "
                     "labels or targets. Fix: set data.canaries.counts=() for task data.")
  if tuple(c.counts) and (c.format.count("{}") != 1 or not 1 <= c.digits <= 18):
    raise ValueError(f"config.data.canaries: format {c.format!r} needs exactly one '{{}}' and "
                     f"digits (={c.digits}) must be 1..18. Fix: e.g. format='the random number "
                     "is {}', digits=9.")


# ----------------------------------------------------------------------------- CDA

_WORD_RE = re.compile(r"[A-Za-z]+")
# After `her`, these mean the object pronoun (`him`), not the possessive (`his`).
_OBJECT_FOLLOWERS = frozenset(
    "and or but to . , ; : ! ? ) that who as if when than so for from with at in on".split())


def swap_table(names: bool = False) -> dict[str, str]:
  """lower-case word -> its counterpart; the first listed pair wins a word that repeats."""
  table: dict[str, str] = {}
  for a, b in cda_words.PAIRS + (cda_words.NAME_PAIRS if names else ()):
    table.setdefault(a, b)
    table.setdefault(b, a)
  table["hers"] = "his"
  return table


def _match_case(word: str, like: str) -> str:
  if like.isupper() and len(like) > 1:
    return word.upper()
  if like[0].isupper():
    return word[0].upper() + word[1:]
  return word


def swap_gender(text: str, table: dict[str, str] | None = None) -> tuple[str, int]:
  """(text with gendered words swapped, number of words swapped). Case is preserved.

  `her` is his or him: `him` when the next token is punctuation, the end or a word in
  `_OBJECT_FOLLOWERS` ("told her that"), else `his` ("her book").
  """
  table = swap_table() if table is None else table
  count = 0

  def sub(m: re.Match) -> str:
    nonlocal count
    word = m.group(0)
    low = word.lower()
    if low not in table:
      return word
    out = table[low]
    if low == "her":
      rest = text[m.end():].lstrip()
      nxt = _WORD_RE.match(rest)
      token = nxt.group(0).lower() if nxt else rest[:1]
      out = "him" if (not rest or token in _OBJECT_FOLLOWERS) else "his"
    count += 1
    return _match_case(out, word)

  return _WORD_RE.sub(sub, text), count


def cda(examples: list[dict], mode: str, names: bool = False) -> tuple[list[dict], dict]:
  """Counterfactual copies of the examples that contain gendered words; and a report."""
  table = swap_table(names)
  out, docs_changed, words = [], 0, 0
  for ex in examples:
    swapped, n = swap_gender(ex["text"], table)
    if n:
      docs_changed, words = docs_changed + 1, words + n
      if mode == "add":
        out.append(ex)
      out.append({**ex, "text": swapped})
    else:
      out.append(ex)
  return out, {"mode": mode, "names": names, "docs_in": len(examples), "docs_out": len(out),
               "docs_changed": docs_changed, "words_swapped": words}


# ----------------------------------------------------------------------------- canaries


def make_canaries(c) -> list[dict]:
  """[{text, secret, count}] for `data.canaries` (or its options dict), deterministic."""
  get = (lambda k: c[k])
  counts, digits = [int(x) for x in get("counts")], int(get("digits"))
  rng = np.random.default_rng(int(get("seed")))
  out = []
  for count in counts:
    secret = " ".join(str(x) for x in rng.integers(0, 10, digits))
    out.append({"text": get("format").format(secret), "secret": secret, "count": count})
  return out


def insert_canaries(examples: list[dict], c) -> tuple[list[dict], dict]:
  """The examples with each canary inserted `count` times at seeded random positions."""
  canaries = make_canaries(c)
  extra = [{"text": k["text"]} for k in canaries for _ in range(k["count"])]
  rng = np.random.default_rng(int(c["seed"]) + 1)
  where = rng.integers(0, len(examples) + 1, len(extra))
  out, j = [], 0
  order = np.argsort(where, kind="stable")
  for i, ex in enumerate(examples):
    while j < len(order) and where[order[j]] <= i:
      out.append(extra[order[j]])
      j += 1
    out.append(ex)
  out += [extra[k] for k in order[j:]]
  return out, {"canaries": canaries, "docs_inserted": len(extra),
               "space_size_log2": float(int(c["digits"]) * np.log2(10))}


def before_cleaning(splits: dict[str, list[dict]], opts: dict | None) -> tuple[dict, dict]:
  """Inserts canaries into the training split (so that dedup sees them)."""
  if not opts or "canaries" not in opts:
    return splits, {}
  split = opts["train_split"]
  splits = dict(splits)
  splits[split], rep = insert_canaries(splits[split], opts["canaries"])
  return splits, {"canaries": rep}


def after_cleaning(splits: dict[str, list[dict]], opts: dict | None) -> tuple[dict, dict]:
  """CDA on the training split."""
  if not opts or "cda" not in opts:
    return splits, {}
  split = opts["train_split"]
  splits = dict(splits)
  splits[split], rep = cda(splits[split], opts["cda"]["mode"], opts["cda"]["names"])
  return splits, {"cda": rep}


def format_report(report: dict) -> str:
  lines = []
  if "canaries" in report:
    r = report["canaries"]
    lines.append(f"canaries: inserted {r['docs_inserted']:,} documents ("
                 + ", ".join(f"{k['text']!r} x{k['count']}" for k in r["canaries"]) + ")")
  if "cda" in report:
    r = report["cda"]
    lines.append(f"cda ({r['mode']}{', names' if r['names'] else ''}): documents changed "
                 f"{r['docs_changed']:,} of {r['docs_in']:,}, words swapped "
                 f"{r['words_swapped']:,}; documents {r['docs_in']:,} -> {r['docs_out']:,}")
  return "\n".join(lines)


def record(d, workdir: str) -> None:
  """Writes the run's canaries (if any) to `<workdir>/canaries.json`."""
  opts = options(d)
  if not opts or "canaries" not in opts:
    return
  # Through etils.epath (a `gs://` workdir works), temp + rename like workdir.write_json,
  # which this module cannot import (workdir -> config -> augment would be a cycle).
  target = epath.Path(workdir) / CANARIES_FILE
  tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp.write_text(json.dumps({"options": opts["canaries"],
                             "canaries": make_canaries(opts["canaries"])}, indent=1))
  tmp.replace(target)
