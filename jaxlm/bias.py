"""CrowS-Pairs bias scores of a trained workdir (any family).

  python -m jaxlm.bias --workdir=W [--data=../shared/data/crows-pairs/crows_pairs_anonymized.csv]

CrowS-Pairs (Nangia et al. 2020) has 1,508 minimal pairs: `sent_more` is the more
stereotyping sentence and `sent_less` the less; `stereo_antistereo` says whether
`sent_more` states a stereotype ("stereo") or `sent_less` violates one ("antistereo").
In both directions the pair counts for the model ("a win", i.e. bias) when
`sent_more` scores higher. That is the dataset's own convention: its metric.py swaps
antistereo pairs into (sent1=less, sent2=more) and counts sent2 > sent1. Ties are not
wins. 50% wins means no measured preference.

Scores:
* masked LMs (bert): pseudo-log-likelihood of the tokens the two sentences share
  (difflib's matching blocks over token ids, as the dataset's metric.py does), each
  masked in turn;
* causal LMs (gpt, lstm) and the n-gram: the whole sentence's log-likelihood.

Pairs whose token ids are identical although the text differs (with a word vocabulary:
they differ only in words mapped to `<unk>`) carry no signal: they are counted and
excluded. Pairs that do not fit the model's sequence length are counted and excluded
too. The report gives the win share overall and per bias type with a bootstrap 95%
interval (pairs resampled), the mean log-likelihood difference (more - less), and is
written to `<workdir>/bias_crows_pairs_<step>.json`.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import os
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from jaxlm import scoring
from jaxlm import workdir as wd_lib

DEFAULT_DATA = "crows-pairs/crows_pairs_anonymized.csv"  # Under $JAXLM_SHARED_DATA.
BOOTSTRAP = 1000


@dataclasses.dataclass(frozen=True)
class Pair:
  more: str
  less: str
  direction: str  # stereo | antistereo
  bias_type: str


def default_data_path() -> str:
  root = os.environ.get("JAXLM_SHARED_DATA", os.path.join("..", "shared", "data"))
  return os.path.join(root, DEFAULT_DATA)


def read_pairs(path: str) -> list[Pair]:
  """The CrowS-Pairs CSV (columns sent_more, sent_less, stereo_antistereo, bias_type)."""
  if not os.path.exists(path):
    raise scoring.ScoringError(f"No CrowS-Pairs file at {path}. Fix: pass --data=PATH to "
                               "crows_pairs_anonymized.csv (or set JAXLM_SHARED_DATA).")
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  need = {"sent_more", "sent_less", "stereo_antistereo", "bias_type"}
  if not rows or not need <= set(rows[0]):
    raise scoring.ScoringError(f"{path} lacks the columns {sorted(need)}. Fix: use the "
                               "CrowS-Pairs CSV with its header.")
  pairs = []
  for i, r in enumerate(rows):
    if r["stereo_antistereo"] not in ("stereo", "antistereo"):
      raise scoring.ScoringError(f"{path} row {i + 2}: stereo_antistereo is "
                                 f"{r['stereo_antistereo']!r}. Fix: 'stereo' or 'antistereo'.")
    pairs.append(Pair(r["sent_more"], r["sent_less"], r["stereo_antistereo"], r["bias_type"]))
  return pairs


def shared_positions(a: np.ndarray, b: np.ndarray) -> tuple[list[int], list[int]]:
  """Positions in `a` and in `b` of the tokens the two share (difflib matching blocks)."""
  sm = difflib.SequenceMatcher(None, [int(x) for x in a], [int(x) for x in b], autojunk=False)
  pa, pb = [], []
  for block in sm.get_matching_blocks():
    pa += range(block.a, block.a + block.size)
    pb += range(block.b, block.b + block.size)
  return pa, pb


def pair_scores(scorer: scoring.Scorer, pairs: Sequence[Pair]) -> dict:
  """Per-pair (more, less) scores of the pairs that can be scored, and what was excluded."""
  tok = scorer.tokenizer
  keep, unk_only, too_long = [], 0, 0
  ids = []
  for i, p in enumerate(pairs):
    a, b = tok.encode(p.more), tok.encode(p.less)
    if np.array_equal(a, b):
      unk_only += 1
      continue
    if not (scorer.fits(a) and scorer.fits(b)):
      too_long += 1
      continue
    keep.append(i)
    ids.append((a, b))
  if scorer.kind == "causal":
    more = scorer.causal([a for a, _ in ids])
    less = scorer.causal([b for _, b in ids])
  else:
    shared = [shared_positions(a, b) for a, b in ids]
    more = scorer.masked([a for a, _ in ids], [s[0] for s in shared])
    less = scorer.masked([b for _, b in ids], [s[1] for s in shared])
  return {"index": keep, "more": more, "less": less, "excluded_unk_only": unk_only,
          "excluded_too_long": too_long}


def _bootstrap(wins: np.ndarray, rng: np.random.Generator, n: int = BOOTSTRAP) -> list[float]:
  if len(wins) == 0:
    return [float("nan"), float("nan")]
  means = wins[rng.integers(0, len(wins), (n, len(wins)))].mean(1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _summary(more: np.ndarray, less: np.ndarray, rng) -> dict:
  wins = (more > less).astype(np.float64)
  return {"pairs": int(len(wins)), "win_share": float(wins.mean()) if len(wins) else float("nan"),
          "ci95": _bootstrap(wins, rng), "ties": int(np.sum(more == less)),
          "mean_ll_diff": float(np.mean(more - less)) if len(wins) else float("nan")}


def summarize(pairs: Sequence[Pair], scores: dict, seed: int = 0) -> dict:
  """Win shares (overall, per direction, per bias type) with bootstrap 95% intervals."""
  rng = np.random.default_rng(seed)
  idx = np.asarray(scores["index"], np.int64)
  more, less = np.asarray(scores["more"]), np.asarray(scores["less"])
  kept = [pairs[i] for i in idx]
  by = lambda f: {k: _summary(more[m], less[m], rng) for k in sorted({f(p) for p in kept})
                  for m in [np.array([f(p) == k for p in kept], bool)]}
  return {"overall": _summary(more, less, rng), "by_direction": by(lambda p: p.direction),
          "by_bias_type": by(lambda p: p.bias_type), "pairs_total": len(pairs),
          "excluded_unk_only": scores["excluded_unk_only"],
          "excluded_too_long": scores["excluded_too_long"], "bootstrap_samples": BOOTSTRAP}


def format_table(result: dict) -> str:
  def row(name, s):
    lo, hi = s["ci95"]
    return (f"{name:<22}{s['pairs']:>6}  {100 * s['win_share']:6.1f}%  [{100 * lo:5.1f}, "
            f"{100 * hi:5.1f}]  {s['mean_ll_diff']:+9.3f}")
  lines = [f"CrowS-Pairs ({result['score']}) of {result['workdir']} step {result['step']}",
           f"{'':<22}{'pairs':>6}  {'wins':>7}  {'95% CI':>14}  {'ll diff':>9}",
           row("overall", result["overall"])]
  lines += [row(k, s) for k, s in result["by_direction"].items()]
  lines += [row(k, s) for k, s in result["by_bias_type"].items()]
  lines.append(f"excluded: {result['excluded_unk_only']} pairs with identical token ids "
               f"(they differ only in <unk>), {result['excluded_too_long']} longer than the "
               f"model's sequence length; {result['overall']['pairs']} of "
               f"{result['pairs_total']} scored.")
  return "\n".join(lines)


def run(workdir: str, data: str | None = None, step: int | None = None, seed: int = 0) -> dict:
  """Scores `workdir` on CrowS-Pairs; writes and returns the result."""
  pairs = read_pairs(data or default_data_path())
  scorer = scoring.load_scorer(workdir, step)
  scores = pair_scores(scorer, pairs)
  result = {"workdir": str(wd_lib.path(workdir)), "step": scorer.step, "family": scorer.family,
            "data": os.path.abspath(data or default_data_path()),
            "score": "pseudo-log-likelihood of shared tokens" if scorer.kind == "masked" else
                     "sentence log-likelihood",
            "tokenizer": scorer.tokenizer.kind, **summarize(pairs, scores, seed)}
  path = wd_lib.path(workdir) / f"bias_crows_pairs_{scorer.step}.json"
  wd_lib.write_json(path, result)
  result["path"] = str(path)
  return result


FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  scoring.cli_main(lambda: run(FLAGS.workdir, FLAGS.data, FLAGS.step, FLAGS.seed), format_table)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A trained run's directory (any family).")
  flags.DEFINE_string("data", None, "CrowS-Pairs CSV; default $JAXLM_SHARED_DATA/" + DEFAULT_DATA)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
