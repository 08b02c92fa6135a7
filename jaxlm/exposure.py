"""Canary exposure (Carlini et al. 2019, "The Secret Sharer") of a trained workdir.

  python -m jaxlm.exposure --workdir=W [--candidates=10000] [--step=N]

The run's canaries (`data.canaries`, see `jaxlm.data.augment`; regenerated from the
workdir's config.json) are `format.format(secret)` with a secret of `digits` random
digits, so the space of secrets R has |R| = 10^digits. Each sequence is scored by its
log-perplexity (negative log-likelihood in nats; the masked family uses the
pseudo-log-likelihood of every token, see `jaxlm.scoring`). The rank of a canary is 1
+ the number of secrets in R the model finds strictly more likely, and

    exposure = log2|R| - log2(rank)     (0 .. log2|R|).

R is far too large to enumerate (10^9), so the rank is estimated from a uniform
sample of `candidates` never-inserted secrets:

* `exposure` (the paper's extrapolation, section 4.3): a skew-normal distribution
  (scipy.stats.skewnorm, maximum likelihood) is fitted to the candidates'
  log-perplexities; the share of R more likely than the canary is its CDF at the
  canary's log-perplexity, rank = max(1, share * |R|);
* `exposure_sampled`: the empirical rank within the sample, log2(n+1) - log2(1 + #more
  likely); it saturates at log2(n+1).

When |R| <= `candidates` the whole space is enumerated and the exact rank is used
for both. Writes `<workdir>/exposure_<step>.json` and prints a table.
"""

from __future__ import annotations

import math

import numpy as np
from absl import app, flags

from jaxlm import scoring
from jaxlm import workdir as wd_lib
from jaxlm.data import augment


def log_perplexities(scorer: scoring.Scorer, texts: list[str]) -> np.ndarray:
  """Negative log-likelihood (nats) of each text: causal, or the masked PLL of every token."""
  ids = [scorer.tokenizer.encode(t) for t in texts]
  if scorer.kind == "causal":
    return -scorer.causal(ids)
  return -scorer.masked(ids, [range(len(s)) for s in ids])


def _secret(i: int, digits: int) -> str:
  return " ".join(str(i).zfill(digits))


def candidate_secrets(digits: int, n: int, exclude: set[str], seed: int = 0) -> tuple[list[str],
                                                                                       bool]:
  """(secrets, exhaustive): all of R if |R| <= n (a canary's own copy never counts as more
  likely than itself, the others do), else n uniform draws not in `exclude`."""
  size = 10 ** digits
  if size <= n:
    return [_secret(i, digits) for i in range(size)], True
  rng = np.random.default_rng(seed)
  out: list[str] = []
  while len(out) < n:
    for row in rng.integers(0, 10, (n, digits)):
      s = " ".join(str(x) for x in row)
      if s not in exclude:
        out.append(s)
  return out[:n], False


def exposure(canary_lp: float, candidate_lp: np.ndarray, digits: int, exhaustive: bool) -> dict:
  """Exposure of one canary from its log-perplexity and the candidates' (see module doc)."""
  log2_r = digits * math.log2(10)
  better = int(np.sum(candidate_lp < canary_lp))
  if exhaustive:
    rank = 1 + better
    e = log2_r - math.log2(rank)
    return {"rank": rank, "exposure": e, "exposure_sampled": e, "method": "exact"}
  from scipy import stats
  params = stats.skewnorm.fit(candidate_lp)
  log_share = float(stats.skewnorm.logcdf(canary_lp, *params))  # ln P(candidate more likely).
  log2_rank = max(0.0, log2_r + log_share / math.log(2))
  n = len(candidate_lp)
  return {"rank_estimate_log2": log2_rank, "exposure": log2_r - log2_rank,
          "exposure_sampled": math.log2(n + 1) - math.log2(1 + better),
          "sample_more_likely": better, "method": "skewnorm fit",
          "skewnorm": [float(p) for p in params]}


def measure(scorer: scoring.Scorer, canaries: list[dict], fmt: str, digits: int,
            candidates: int = 10_000, seed: int = 0) -> dict:
  """Exposure of each canary against `candidates` never-inserted secrets."""
  secrets, exhaustive = candidate_secrets(digits, candidates, {k["secret"] for k in canaries},
                                          seed)
  cand_lp = log_perplexities(scorer, [fmt.format(s) for s in secrets])
  can_lp = log_perplexities(scorer, [k["text"] for k in canaries])
  rows = []
  for k, lp in zip(canaries, can_lp, strict=True):
    rows.append({**k, "log_perplexity": float(lp), **exposure(float(lp), cand_lp, digits,
                                                              exhaustive)})
  return {"space_size_log2": digits * math.log2(10), "candidates": len(secrets),
          "exhaustive": exhaustive, "candidate_log_perplexity": {
              "mean": float(np.mean(cand_lp)), "std": float(np.std(cand_lp)),
              "min": float(np.min(cand_lp))}, "canaries": rows}


def run(workdir: str, step: int | None = None, candidates: int = 10_000, seed: int = 0) -> dict:
  from jaxlm import inference

  config = inference.load_config(workdir)
  opts = augment.options(config.data)
  if not opts or "canaries" not in opts:
    raise scoring.ScoringError(f"{workdir} was trained without canaries (data.canaries.counts "
                               "is empty). Fix: train with e.g. --config.data.canaries.counts="
                               "'(1,4,16)'.")
  c = opts["canaries"]
  scorer = scoring.load_scorer(workdir, step)
  out = {"workdir": str(wd_lib.path(workdir)), "step": scorer.step, "family": scorer.family,
         "format": c["format"], **measure(scorer, augment.make_canaries(c), c["format"],
                                          c["digits"], candidates, seed)}
  path = wd_lib.path(workdir) / f"exposure_{scorer.step}.json"
  wd_lib.write_json(path, out)
  out["path"] = str(path)
  return out


def format_table(out: dict) -> str:
  lines = [f"Canary exposure of {out['workdir']} step {out['step']} (log2|R| = "
           f"{out['space_size_log2']:.1f}; {out['candidates']:,} candidates, "
           f"{'exact rank' if out['exhaustive'] else 'skew-normal extrapolation'})",
           f"{'count':>6} {'log-ppl':>9} {'exposure':>9} {'sampled':>8}  canary"]
  for r in out["canaries"]:
    lines.append(f"{r['count']:>6} {r['log_perplexity']:9.3f} {r['exposure']:9.2f} "
                 f"{r['exposure_sampled']:8.2f}  {r['text']}")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  scoring.cli_main(lambda: run(FLAGS.workdir, FLAGS.step, FLAGS.candidates, FLAGS.seed),
                   format_table)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A run trained with data.canaries (any family).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  flags.DEFINE_integer("candidates", 10_000, "Never-inserted secrets sampled for the rank.")
  flags.DEFINE_integer("seed", 0, "Candidate sampling seed.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
