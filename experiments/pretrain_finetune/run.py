"""Pretrain -> fine-tune vs. from scratch on SST-2, through the CLI; writes results.json + PNGs.

  python experiments/pretrain_finetune/run.py [--work=/tmp/pretrain_finetune] [--variant=]

Runs (each a `python -m jaxlm.main` command, timed):
  pre      LM pretraining on the SST-2 training sentences (labels unused)
  ft       classification fine-tuning from `pre` (init_from; tokenizer reused)
  scratch  the same classifier config with init_from unset (same tokenizer file)
then `--mode=eval --step=best` on dev for ft and scratch, and plots the
validation curves with jaxlm.plots.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from jaxlm import plots  # noqa: E402


def sh(args: list[str], log: str) -> float:
  cmd = [sys.executable, "-m", "jaxlm.main", *args]
  print("+", " ".join(cmd), flush=True)
  t = time.time()
  with open(log, "w") as f:
    subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, check=True)
  return time.time() - t


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--work", default="/tmp/pretrain_finetune")
  p.add_argument("--variant", default="", help="config variant, e.g. 'bert'")
  p.add_argument("--tag", default="", help="name of the results/plots (default: variant or gpt)")
  p.add_argument("--extra", default="", help="extra --config.* flags, space-separated")
  # Data: $JAXLM_SHARED_DATA/sst2, else ../shared/data/sst2 beside the repository.
  a = p.parse_args()
  v = f",{a.variant}" if a.variant else ""
  tag = a.tag or a.variant or "gpt"
  cfg = "configs/sst2_finetune.py"
  work = os.path.join(a.work, tag)
  os.makedirs(work, exist_ok=True)
  shared = os.environ.get("JAXLM_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared",
                                                            "data"))
  sst2 = os.path.join(shared, "sst2")
  extra = [f"--config.data.path={sst2}/train.tsv", *a.extra.split()]
  dev = [f"--config.data.eval_path={sst2}/dev.tsv"]
  pre, ft, scratch = (os.path.join(work, n) for n in ("pre", "ft", "scratch"))
  times, loads = {}, {}
  for name, args in [
      ("pre", [f"--config={cfg}:pretrain{v}", f"--workdir={pre}", *extra]),
      ("ft", [f"--config={cfg}:{v.lstrip(',')}", f"--workdir={ft}", f"--config.init_from={pre}",
              *extra, *dev]),
      ("scratch", [f"--config={cfg}:{v.lstrip(',')}", f"--workdir={scratch}",
                   f"--config.data.tokenizer_path={pre}", *extra, *dev]),
  ]:
    loads[name] = open("/proc/loadavg").read().split()[:3]
    times[name] = sh(args, os.path.join(work, f"{name}.log"))
    print(f"{name}: {times[name]:.0f}s (load before {loads[name]})", flush=True)
  results = {"variant": tag, "wall_s": times, "loadavg_before": loads}
  for name, wd in (("ft", ft), ("scratch", scratch)):
    sh([f"--config={cfg}:{v.lstrip(',')}", f"--workdir={wd}", "--mode=eval", "--step=best",
        *extra, *dev], os.path.join(work, f"eval_{name}.log"))
    evals = sorted(f for f in os.listdir(wd) if f.startswith("eval_validation_"))
    with open(os.path.join(wd, evals[-1])) as f:
      r = json.load(f)
    results[name] = {k: r[k] for k in ("step", "accuracy", "f1", "macro_f1", "precision",
                                       "recall", "confusion_matrix", "loss")}
  rows = {n: plots.read_metrics_jsonl(os.path.join(wd, "metrics.jsonl"))
          for n, wd in (("fine-tuned from pretrained", ft), ("from scratch", scratch))}
  for key, ylabel in (("eval_accuracy", "dev accuracy"), ("eval_loss", "dev loss")):
    plots.plot_curves({n: plots.curves_from_metrics(r, key) for n, r in rows.items()},
                      os.path.join(HERE, f"{tag}_{key}.png"), title=f"SST-2 dev ({tag})",
                      ylabel=ylabel)
  pre_rows = plots.read_metrics_jsonl(os.path.join(pre, "metrics.jsonl"))
  plots.plot_curves({"pretraining": plots.curves_from_metrics(pre_rows, "eval_loss")},
                    os.path.join(HERE, f"{tag}_pretrain_eval_loss.png"),
                    title=f"LM pretraining on SST-2 sentences ({tag})", ylabel="val loss (nats)")
  with open(os.path.join(HERE, f"results_{tag}.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
