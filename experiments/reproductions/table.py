"""Builds the reproductions table from results/*.json (written by run.py); nothing is typed.

  python experiments/reproductions/table.py            # prints the markdown table
  python experiments/reproductions/table.py --write    # also replaces it in README.md
"""

from __future__ import annotations

import argparse
import glob
import json
import os

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


def table(results_dir: str = os.path.join(HERE, "results")) -> str:
  head = ("| task | reference | jaxlm | command | wall time | machine | note |\n"
          "|---|---|---|---|---|---|---|")
  rows = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
    with open(path) as f:
      rows.append(row(json.load(f)))
  return "\n".join([head, *rows])


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
