"""CrowS-Pairs scores of every bias_cda run, and the tables (results/crows_pairs.md, .json).

  python experiments/bias_cda/report.py [--out=experiments/bias_cda/results]

Runs `jaxlm.bias.run` on each finished run (writing its bias_crows_pairs_<step>.json) and
tabulates it with the run's final validation (test.txt) perplexity from metrics.jsonl.
"""

import argparse
import glob
import json
import os

import numpy as np

from jaxlm import bias


def final(workdir: str, key: str) -> float:
  value = float("nan")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      value = row.get(key, value)
  return value


def main() -> None:
  here = os.path.dirname(os.path.abspath(__file__))
  p = argparse.ArgumentParser()
  p.add_argument("--out", default=os.path.join(here, "results"))
  args = p.parse_args()
  rows = []
  missing = []
  for wd in sorted(glob.glob(os.path.join(args.out, "runs", "*"))):
    if not glob.glob(os.path.join(wd, "checkpoints", "[0-9]*")) and not os.path.exists(
        os.path.join(wd, "ngram.npz")):
      missing.append(os.path.basename(wd))  # Not trained (yet): reported, not scored.
      continue
    done = sorted(glob.glob(os.path.join(wd, "bias_crows_pairs_*.json")),  # By step, not as text.
                  key=lambda f: int(os.path.basename(f).rsplit("_", 1)[1].split(".")[0]))
    if done:  # Scored already (by this script or `python -m jaxlm.bias`): reuse the file.
      with open(done[-1]) as f:
        r = json.load(f)
    else:
      r = bias.run(wd)
    variant, seed = os.path.basename(wd).split(",seed=")
    g = r["by_bias_type"]["gender"]
    rows.append({"variant": variant, "seed": int(seed), "eval_ppl": final(wd, "eval_ppl"),
                 "overall": r["overall"]["win_share"], "overall_ci95": r["overall"]["ci95"],
                 "gender": g["win_share"], "gender_ci95": g["ci95"], "gender_pairs": g["pairs"],
                 "pairs": r["overall"]["pairs"], "excluded_unk_only": r["excluded_unk_only"]})
  lines = ["| variant | seed | valid ppl | CrowS overall | 95% CI | CrowS gender | 95% CI | "
           "pairs (gender) | excluded (<unk> only) |", "|---|---|---|---|---|---|---|---|---|"]
  pct = lambda x: f"{100 * x:.1f}%"
  ci = lambda c: f"[{100 * c[0]:.1f}, {100 * c[1]:.1f}]"
  for r in rows:
    lines.append(f"| {r['variant']} | {r['seed']} | {r['eval_ppl']:.1f} | {pct(r['overall'])} | "
                 f"{ci(r['overall_ci95'])} | {pct(r['gender'])} | {ci(r['gender_ci95'])} | "
                 f"{r['pairs']} ({r['gender_pairs']}) | {r['excluded_unk_only']} |")
  lines += ["", "| variant | seeds | valid ppl (mean ± sd) | overall (mean ± sd) | "
            "gender (mean ± sd) |", "|---|---|---|---|---|"]
  for v in dict.fromkeys(r["variant"] for r in rows):
    sel = [r for r in rows if r["variant"] == v]
    def ms(k, s=1.0, sel=sel):
      x = s * np.array([r[k] for r in sel])
      return f"{x.mean():.1f} ± {x.std(ddof=1 if len(x) > 1 else 0):.1f}"
    lines.append(f"| {v} | {len(sel)} | {ms('eval_ppl')} | {ms('overall', 100)}% | "
                 f"{ms('gender', 100)}% |")
  if missing:
    lines += ["", f"Not scored (no checkpoint): {', '.join(missing)}."]
  text = "\n".join(lines)
  with open(os.path.join(args.out, "crows_pairs.md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(args.out, "crows_pairs.json"), "w") as f:
    json.dump(rows, f, indent=1)
  print(text)


if __name__ == "__main__":
  main()
