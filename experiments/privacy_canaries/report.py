"""Exposure of every privacy_canaries run, and the table (results/exposure.md, .json).

  python experiments/privacy_canaries/report.py [--candidates=2000]

Runs `jaxlm.exposure.run` on each finished run (writing its exposure_<step>.json) and
tabulates it with the run's final validation perplexity and DP epsilon from metrics.jsonl.
"""

import argparse
import glob
import json
import os

from jaxlm import exposure


def final(workdir: str, key: str) -> float:
  value = float("nan")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      value = json.loads(line).get(key, value)
  return value


def main() -> None:
  here = os.path.dirname(os.path.abspath(__file__))
  p = argparse.ArgumentParser()
  p.add_argument("--out", default=os.path.join(here, "results"))
  p.add_argument("--candidates", type=int, default=2000)
  args = p.parse_args()
  rows = []
  missing = []
  for wd in sorted(glob.glob(os.path.join(args.out, "runs", "*"))):
    if not glob.glob(os.path.join(wd, "checkpoints", "[0-9]*")) and not os.path.exists(
        os.path.join(wd, "ngram.npz")):
      missing.append(os.path.basename(wd))  # Not trained (yet): reported, not scored.
      continue
    done = sorted(glob.glob(os.path.join(wd, "exposure_*.json")),  # By step, not as text.
                  key=lambda f: int(os.path.basename(f).rsplit("_", 1)[1].split(".")[0]))
    if done:  # Measured already (by this script or `python -m jaxlm.exposure`): reuse the file.
      with open(done[-1]) as f:
        r = json.load(f)
    else:
      r = exposure.run(wd, candidates=args.candidates)
    rows.append({"run": os.path.basename(wd), "eval_ppl": final(wd, "eval_ppl"),
                 "dp_epsilon": final(wd, "dp_epsilon"), "delta": final(wd, "dp_delta"),
                 "canaries": [{k: c[k] for k in ("count", "log_perplexity", "exposure",
                                                 "exposure_sampled")} for c in r["canaries"]],
                 "candidates": r["candidates"],
                 "candidate_log_perplexity": r["candidate_log_perplexity"]})
  counts = [c["count"] for c in rows[0]["canaries"]]
  head = " | ".join(f"exposure x{n} (sampled)" for n in counts)
  lines = [f"| run | valid ppl | epsilon (delta 1e-5) | {head} |",
           "|---|---|---|" + "---|" * len(counts)]
  for r in rows:
    cells = " | ".join(f"{c['exposure']:.2f} ({c['exposure_sampled']:.2f})"
                       for c in r["canaries"])
    eps = "-" if r["dp_epsilon"] != r["dp_epsilon"] else f"{r['dp_epsilon']:.3g}"
    lines.append(f"| {r['run']} | {r['eval_ppl']:.1f} | {eps} | {cells} |")
  lines.append("")
  lines.append(f"log2|R| = 29.9; {rows[0]['candidates']} never-inserted candidates per run; "
               "exposure = skew-normal extrapolation, (sampled) = empirical rank in the sample "
               "(at most log2(n+1)).")
  if missing:
    lines += ["", f"Not scored (no checkpoint): {', '.join(missing)}."]
  text = "\n".join(lines)
  with open(os.path.join(args.out, "exposure.md"), "w") as f:
    f.write(text + "\n")
  with open(os.path.join(args.out, "exposure.json"), "w") as f:
    json.dump(rows, f, indent=1)
  print(text)


if __name__ == "__main__":
  main()
