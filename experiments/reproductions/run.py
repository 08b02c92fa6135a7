"""Runs one reproduction through the CLI and records its result file.

  python experiments/reproductions/run.py --task=ptb_kn5
  python experiments/reproductions/run.py --task=ptb_lstm_small_1epoch --timeout=1500
  python experiments/reproductions/run.py --task=multi30k_en_de

Runs `python -m jaxlm.main` with the task's exact arguments (workdir under /tmp), then writes
`experiments/reproductions/results/<task>.json`: the command, wall time, exit code, machine
(CPU model, cores, load average before/after, JAX backend) and every row of the run's
metrics.jsonl (and, for a task with a follow-up eval-mode command, that command's
`eval_<split>_<step>.json`). `table.py` builds the README's table from these files only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PTB = ["--config.data.path=../shared/data/ptb/ptb.train.txt",
       "--config.data.eval_path=../shared/data/ptb/ptb.valid.txt"]

# task -> (config, extra flags, reference: paper, metric, number, what the run is).
TASKS = {
    "ptb_kn5": ("configs/ptb.py:kn5", PTB, {
        "paper": "Mikolov et al. 2011 (KN5, SRILM), PTB valid", "metric": "eval_ppl",
        "number": 148.0, "note": "full recipe"}),
    "ptb_lstm_small_1epoch": ("configs/ptb.py:lstm_small", PTB + [
        "--config.stop_after_steps=2323", "--config.eval_every_steps=500"], {
        "paper": "Zaremba et al. 2014 small, PTB valid after 13 epochs", "metric": "eval_ppl",
        "number": 120.7, "note": "the published schedule's first epoch of 13 (stopped "
                                 "there): its speed on this machine"}),
    "ptb_lstm_small_fast": ("configs/ptb.py:lstm_small_fast", PTB, {
        "paper": "Zaremba et al. 2014 small, PTB valid after 13 epochs", "metric": "eval_ppl",
        "number": 120.7, "note": "lstm_small's SGD in 7 epochs (lr x0.4 per epoch after "
                                 "epoch 4), sized to 60 minutes on 2 cores; full recipe"}),
    "multi30k_en_de": ("configs/multi30k_translate.py", [], {
        "paper": "small Transformers from scratch, Multi30k en-de test_2016_flickr BLEU "
                 "(about 35-38, ../shared/data/README.md)", "metric": "bleu", "number": 35.0,
        "note": "trained with val BLEU selecting the checkpoint; the best one translates "
                "test_2016_flickr greedily (sacrebleu, detokenized)",
        # Then: eval mode on the test split with the checkpoint kept as best on val.
        "then": ["configs/multi30k_translate.py:test", "--mode=eval", "--step=best"]}),
}


def machine() -> dict:
  cpu = ""
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 "")
  return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(),
          "platform": platform.platform(), "python": platform.python_version()}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--task", required=True, choices=sorted(TASKS))
  ap.add_argument("--timeout", type=float, default=3600, help="Seconds; the run is then stopped.")
  args = ap.parse_args()
  config, extra, reference = TASKS[args.task]
  workdir = os.path.join("/tmp", "jaxlm_repro", args.task)
  shutil.rmtree(workdir, ignore_errors=True)
  cmds = [[sys.executable, "-m", "jaxlm.main", f"--config={config}", f"--workdir={workdir}",
           *extra]]
  if reference.get("then"):  # An eval-mode command on the trained workdir.
    then_config, *then_flags = reference["then"]
    cmds.append([sys.executable, "-m", "jaxlm.main", f"--config={then_config}",
                 f"--workdir={workdir}", *then_flags])
  shown = " && ".join(" ".join(["python", *cmd[1:]]) for cmd in cmds)
  load_before = os.getloadavg()
  t0 = time.time()
  rc: int | str = 0
  for cmd in cmds:
    try:
      rc = subprocess.run(cmd, cwd=REPO, timeout=args.timeout - (time.time() - t0)).returncode
    except subprocess.TimeoutExpired:
      rc = "timeout"
    if rc != 0:
      break
  wall = time.time() - t0
  metrics = os.path.join(workdir, "metrics.jsonl")
  rows = [json.loads(x) for x in open(metrics)] if os.path.exists(metrics) else []
  evals = sorted(glob.glob(os.path.join(workdir, "eval_*.json")), key=os.path.getmtime)
  out = {"task": args.task, "command": shown, "returncode": rc, "wall_s": round(wall, 1),
         "machine": {**machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
         "reference": reference, "metrics": rows}
  if reference.get("then"):
    out["eval"] = json.load(open(evals[-1])) if evals and rc == 0 else None
  os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
  path = os.path.join(HERE, "results", f"{args.task}.json")
  with open(path, "w") as f:
    json.dump(out, f, indent=1)
  print(f"wrote {path}: rc={rc}, {wall:.0f}s, {len(rows)} metric rows")


if __name__ == "__main__":
  main()
