"""Builds the reproductions table from results/*.json (written by run.py); nothing is typed.

  python experiments/reproductions/table.py            # prints the markdown table
  python experiments/reproductions/table.py --write    # also replaces it in README.md
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN, END = "<!-- table:begin -->", "<!-- table:end -->"


def row(r: dict) -> str:
  ref = r["reference"]
  evals = [m for m in r["metrics"] if ref["metric"] in m]
  if "eval" in r:  # A follow-up eval-mode command scored the split.
    e = r["eval"]
    ours = (f"{e[ref['metric']]:.1f} ({e['generated']:,} sentences, step "
            f"{e['step']}; chrF {e['chrf']:.1f})") if e else "no evaluation"
  elif evals:
    last = evals[-1]
    ours = f"{last[ref['metric']]:.1f} ({int(last.get('eval_tokens', 0)):,} tokens, step " \
           f"{last['step']})"
  else:
    ours = "no evaluation"
  m = r["machine"]
  load = m["loadavg_before"][0]
  machine = f"{m['cpu']}, {m['cores']} cores, load {load:.1f}"
  return (f"| {r['task']} | {ref['paper']}: {ref['number']} | {ours} | `{r['command']}` | "
          f"{r['wall_s']:.0f} s (exit {r['returncode']}) | {machine} | {ref['note']} |")


SST2 = os.path.join(os.path.dirname(HERE), "pretrain_finetune", "results")
SST2_COMMAND = "python -m jaxlm.lab.sweep experiments/pretrain_finetune"
PRETRAIN, PRETRAINED = "pretrain_lstm", "lstm_pretrained"  # The sweep's LM and fine-tuned arm.


def sst2_row(results_dir: str = SST2) -> str | None:
  """SST-2 from the pretrain -> fine-tune sweep's files: the mean final dev accuracy of each
  variant over its seeds; wall time = the pretraining run + one fine-tuning run (mean)."""
  runs_path = os.path.join(results_dir, "runs.csv")
  pre_path = os.path.join(results_dir, "prerequisites.csv")
  if not (os.path.exists(runs_path) and os.path.exists(pre_path)):
    return None
  with open(runs_path) as f:
    runs = [r for r in csv.DictReader(f) if r["status"] == "done"]
  with open(pre_path) as f:
    pre = {r["run"]: r for r in csv.DictReader(f)}
  by = {}
  for r in runs:
    by.setdefault(r["variant"], []).append(r)
  if PRETRAINED not in by or PRETRAIN not in pre:
    return None

  def acc(v: str) -> str:
    xs = [float(r["final:eval_accuracy"]) for r in by.get(v, [])]
    return f"{v} {statistics.mean(xs):.3f} ({len(xs)} seeds)" if xs else f"{v}: none"

  wall = float(pre[PRETRAIN]["wall_s"]) + statistics.mean(
      float(r["wall_s"]) for r in by[PRETRAINED])
  ours = "; ".join(acc(v) for v in (PRETRAINED, "lstm_scratch", "bow") if v in by)
  return (f"| sst2_pretrain_finetune | SST-2 dev accuracy, bag-of-words linear models "
          f"(../shared/data/README.md): 0.80-0.82; the goal: 0.83 | {ours} | `{SST2_COMMAND}` "
          f"| {wall:.0f} s (pretraining + one fine-tuning run) | see "
          f"experiments/pretrain_finetune | dev accuracy at the last step, 872 sentences |")


def table(results_dir: str = os.path.join(HERE, "results"), sst2_dir: str = SST2) -> str:
  head = ("| task | reference | jaxlm | command | wall time | machine | note |\n"
          "|---|---|---|---|---|---|---|")
  rows = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
    with open(path) as f:
      rows.append(row(json.load(f)))
  sst2 = sst2_row(sst2_dir)
  return "\n".join([head, *rows, *([sst2] if sst2 else [])])


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--write", action="store_true")
  args = ap.parse_args()
  t = table()
  print(t)
  if args.write:
    path = os.path.join(HERE, "README.md")
    with open(path) as f:
      text = f.read()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    with open(path, "w") as f:
      f.write(text[:start] + "\n" + t + "\n" + text[end:])


if __name__ == "__main__":
  main()
