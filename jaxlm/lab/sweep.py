"""Sweeps: a grid and/or random search over config fields, run and reported.

An experiment is a folder `experiments/<name>/` with a `sweep.py` that defines
`get_sweep() -> Sweep` and a README stating the question. Then

  python -m jaxlm.lab.sweep experiments/<name> [--parallel=N] [--report] [--out=DIR]

trains every run with the CLI (`python -m jaxlm.main`) in its own workdir
`<out>/runs/<overrides>` (default out: `experiments/<name>/results`), N at a
time, and writes `results.md`, `results.csv`, `runs.csv` and PNG plots to
`<out>` (see `jaxlm.lab.sweep_report`). A restarted sweep skips finished runs and
the trainer resumes unfinished ones from their checkpoints. Random searches may
use successive halving: every run trains to the first rung, the best 1/eta go on
to the next, and so on, each continuing from its own checkpoint.

Example `sweep.py`:

  from jaxlm.lab.sweep import Choice, LogUniform, Sweep

  def get_sweep():
    return Sweep(config="configs/shakespeare_char.py",
                 overrides={"num_train_steps": 300},
                 random={"optimizer.learning_rate": LogUniform(1e-4, 1e-2),
                         "model.position": Choice(["rope", "alibi"])},
                 num_samples=8, seeds=1, metric="eval_loss")

Arms that differ in more than one field, or in the base config, are named
variants (each a bundle of overrides, combined with any grid; the name is the
table's first column). A run that starts from another run's result (fine-tuning
from a pretraining) names it as a prerequisite, trained once before the others,
and points at its workdir with `RunDir`:

  Sweep(config="configs/sst2_finetune.py",
        prerequisites={"pretrain": {"config": "configs/sst2_finetune.py:pretrain"}},
        variants={"pretrained": {"init_from": RunDir("pretrain")},
                  "scratch": {"data.tokenizer_path": RunDir("pretrain")}},
        seeds=3, metric="eval_accuracy", goal="max")

Prerequisites train in `<out>/runs/<name>` (a restart skips them when finished);
the report lists them in their own table. `columns=("eval_macro_f1", ...)` picks the
final metrics the table shows besides `metric`. See `jaxlm.lab.sweep_spec` for the fields.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from jaxlm.lab import sweep_report
from jaxlm.lab.sweep_spec import (  # noqa: F401  (re-exported: experiments import them from here)
  ATTEMPTS_FILE,
  DONE_FILE,
  LOG_FILE,
  REPO,
  Choice,
  Halving,
  LogUniform,
  RunDir,
  RunSpec,
  Sweep,
  Uniform,
  _flag_value,
  _fmt,
  _short_keys,
  display_command,
  expand,
  expand_prerequisites,
  load_sweep,
  read_json,
  resolve_config,
  resolve_run_dirs,
  run_config,
  run_dirs,
)

# ----------------------------------------------------------------------------- running


def train_command(sweep: Sweep, spec: RunSpec, workdir: str, stop_after: int = 0) -> list[str]:
  workdir = os.path.abspath(workdir)
  config, values = run_config(sweep, spec, os.path.dirname(workdir))
  args = [sys.executable, "-m", "jaxlm.main", f"--config={resolve_config(config)}",
          f"--workdir={workdir}"]
  for k, v in values.items():
    args.append(f"--config.{k}={_flag_value(v)}")
  if stop_after:
    args.append(f"--config.stop_after_steps={stop_after}")
  return args


def device_groups(device_ids: Sequence[str], parallel: int) -> list[list[str]]:
  """Splits accelerator ids into `parallel` disjoint, equal groups (one per worker)."""
  if not device_ids:
    return [[] for _ in range(parallel)]
  if len(device_ids) < parallel:
    raise ValueError(f"--parallel={parallel} but only {len(device_ids)} devices: use at most "
                     f"{len(device_ids)} parallel runs.")
  per = len(device_ids) // parallel
  return [list(device_ids[i * per:(i + 1) * per]) for i in range(parallel)]


def visible_gpus() -> list[str]:
  """GPU ids this process may use: $CUDA_VISIBLE_DEVICES, else nvidia-smi's count."""
  env = os.environ.get("CUDA_VISIBLE_DEVICES")
  if env is not None:
    return [d for d in env.split(",") if d.strip()]
  if shutil.which("nvidia-smi"):
    try:
      out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
      return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU")]
    except (OSError, subprocess.SubprocessError):
      return []
  return []


def trained_steps(workdir: str) -> int:
  """The last step with a row in metrics.jsonl (0 if none)."""
  path = os.path.join(workdir, "metrics.jsonl")
  step = 0
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          step = max(step, int(json.loads(line).get("step", 0)))
        except (json.JSONDecodeError, ValueError, AttributeError):
          continue
  return step


class Runner:
  """Runs specs with at most `parallel` trainer processes, each on its own device group."""

  def __init__(self, sweep: Sweep, out: str, parallel: int = 1, log=print):
    self.sweep, self.out, self.log = sweep, out, log
    self.parallel = max(1, parallel)
    self._groups: queue.Queue = queue.Queue()
    for g in device_groups(visible_gpus(), self.parallel):
      self._groups.put(g)
    self._lock = threading.Lock()

  def workdir(self, spec: RunSpec) -> str:
    return os.path.join(self.out, "runs", spec.name)

  def is_done(self, spec: RunSpec) -> bool:
    done = read_json(os.path.join(self.workdir(spec), DONE_FILE))
    return bool(done) and done.get("status") == "done"

  def run_all(self, specs: Sequence[RunSpec], stop_after: int = 0) -> dict[str, str]:
    """Trains the specs (to `stop_after` steps if set); returns name -> status."""
    with ThreadPoolExecutor(self.parallel) as pool:
      statuses = list(pool.map(lambda s: self.run_one(s, stop_after), specs))
    return {s.name: st for s, st in zip(specs, statuses, strict=True)}

  def run_one(self, spec: RunSpec, stop_after: int = 0) -> str:
    wd = self.workdir(spec)
    if self.is_done(spec):
      with self._lock:
        self.log(f"[skip] {spec.name}: finished")
      return "skipped"
    if stop_after and trained_steps(wd) >= stop_after:
      return "paused"
    os.makedirs(wd, exist_ok=True)
    group = self._groups.get()
    try:
      env = dict(os.environ)
      if group:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(group)
      cmd = train_command(self.sweep, spec, wd, stop_after)
      resumed = trained_steps(wd)
      with self._lock:
        self.log(f"[run]  {spec.name}" + (f" (resuming after step {resumed})" if resumed else "")
                 + (f" to step {stop_after}" if stop_after else ""))
      t0 = time.time()
      with open(os.path.join(wd, LOG_FILE), "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        evals = rc == 0 and not stop_after and not spec.prerequisite
        for seq_len in (self.sweep.extra_eval_seq_lens if evals else ()):
          target = os.path.join(wd, f"eval_len{seq_len}.json")
          # The whole validation split at every length (--eval_steps=-1), so that the
          # eval_loss@N columns score the same text.
          subprocess.run([sys.executable, "-m", "jaxlm.restore", f"--workdir={wd}",
                          f"--seq_len={seq_len}", "--eval_steps=-1", f"--out={target}"],
                         cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
      wall = time.time() - t0
    finally:
      self._groups.put(group)
    with open(os.path.join(wd, ATTEMPTS_FILE), "a") as f:
      f.write(json.dumps({"wall_s": wall, "returncode": rc, "stop_after": stop_after,
                          "start_step": resumed, "end_step": trained_steps(wd),
                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    status = "failed" if rc else ("paused" if stop_after else "done")
    if status != "paused":
      with open(os.path.join(wd, DONE_FILE), "w") as f:
        json.dump({"status": status, "returncode": rc}, f)
    with self._lock:
      self.log(f"[{status}] {spec.name} in {wall:.0f}s" +
               ("" if not rc else f" (exit {rc}; see {os.path.join(wd, LOG_FILE)})"))
    return status


def run_sweep(sweep: Sweep, out: str, parallel: int = 1, log=print) -> dict[str, str]:
  """Trains every run not yet finished (with successive halving if the sweep asks)."""
  runner = Runner(sweep, out, parallel, log)
  statuses = run_prerequisites(runner)
  failed = {n for n, st in statuses.items() if st in ("failed", "blocked")}
  specs = []
  for s in expand(sweep):
    missing = [n for n in s.needs if n in failed]
    if missing:
      statuses[s.name] = "blocked"
      log(f"[blocked] {s.name}: prerequisite {', '.join(missing)} failed")
    else:
      specs.append(s)
  if sweep.halving is None:
    return {**statuses, **runner.run_all(specs)}
  num_steps = int(sweep.overrides.get("num_train_steps") or 0)
  if not num_steps:
    raise ValueError("Sweep.halving needs overrides['num_train_steps'] (the full budget).")
  alive = list(specs)
  rungs = sweep.halving.rungs(num_steps)
  for i, rung in enumerate(rungs):
    last = i == len(rungs) - 1
    statuses.update(runner.run_all(alive, stop_after=0 if last else rung))
    if last:
      break
    scores = sweep_report.group_scores(sweep, out, alive, at_step=rung)
    groups = sorted(scores, key=scores.get, reverse=sweep.goal == "max")
    keep = set(groups[:max(1, math.ceil(len(groups) / sweep.halving.eta))])
    for s in alive:
      if s.group not in keep and statuses.get(s.name) != "failed":
        statuses[s.name] = f"stopped@{rung}"
        _mark_stopped(runner.workdir(s), rung)
    log(f"[halving] rung {rung} steps: {len(keep)}/{len(groups)} continue")
    alive = [s for s in alive if s.group in keep]
  return statuses


def run_prerequisites(runner: Runner) -> dict[str, str]:
  """Trains the sweep's prerequisites in waves: each after the ones its overrides use."""
  statuses: dict[str, str] = {}
  pending = expand_prerequisites(runner.sweep)
  while pending:
    ready = [s for s in pending if all(n in statuses for n in s.needs)]
    for s in ready:  # Not started when a prerequisite of its own failed.
      if any(statuses[n] in ("failed", "blocked") for n in s.needs):
        statuses[s.name] = "blocked"
        runner.log(f"[blocked] {s.name}: prerequisite {', '.join(s.needs)} failed")
    statuses.update(runner.run_all([s for s in ready if s.name not in statuses]))
    pending = [s for s in pending if s.name not in statuses]
  return statuses


def _mark_stopped(workdir: str, step: int) -> None:
  with open(os.path.join(workdir, DONE_FILE), "w") as f:
    json.dump({"status": "stopped", "stopped_at": step, "returncode": 0}, f)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
  import argparse
  p = argparse.ArgumentParser(prog="python -m jaxlm.lab.sweep", description=__doc__.split("\n")[0])
  p.add_argument("experiment", help="experiments/<name> (a folder with sweep.py).")
  p.add_argument("--parallel", type=int, default=1, help="Trainer processes at once.")
  p.add_argument("--report", action="store_true", help="Only write the report; train nothing.")
  p.add_argument("--out", default="", help="Output dir (default: <experiment>/results).")
  p.add_argument("--dry_run", action="store_true", help="Print the runs' commands and stop.")
  a = p.parse_args(argv)
  try:
    sweep = load_sweep(a.experiment)
  except (OSError, ValueError, TypeError, AttributeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  out = a.out or os.path.join(a.experiment, "results")
  specs = expand_prerequisites(sweep) + expand(sweep)
  if a.dry_run:
    for s in specs:
      print(display_command(sweep, s, os.path.join(out, "runs", s.name)))
    return 0
  t0, load0 = time.time(), _loadavg()
  if not a.report:
    pre = len(sweep.prerequisites)
    print(f"{len(specs)} runs" + (f" ({pre} prerequisite)" if pre else "") +
          f" -> {out} (parallel {a.parallel})", flush=True)
    statuses = run_sweep(sweep, out, a.parallel, log=lambda m: print(m, flush=True))
    failed = [n for n, st in statuses.items() if st in ("failed", "blocked")]
    trained = any(st != "skipped" for st in statuses.values())
  else:
    failed, trained = [], False
  paths = sweep_report.write_report(sweep, out, experiment=a.experiment,
                                    session={"wall_s": time.time() - t0, "load_start": load0,
                                             "load_end": _loadavg(), "parallel": a.parallel,
                                             "trained": trained})
  print("\n".join(["report:", *paths]))
  if failed:
    print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 1
  return 0


def _loadavg() -> str:
  try:
    with open("/proc/loadavg") as f:
      return " ".join(f.read().split()[:3])
  except OSError:
    return "n/a"


if __name__ == "__main__":  # Run the imported module's main (its Runner, for monkeypatching).
  from jaxlm.lab import sweep as _sweep
  sys.exit(_sweep.main())
