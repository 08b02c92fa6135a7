"""Sweeps: a grid and/or random search over config fields, run and reported.

An experiment is a folder `experiments/<name>/` with a `sweep.py` that defines
`get_sweep() -> Sweep` and a README stating the question. Then

  python -m jaxlm.sweep experiments/<name> [--parallel=N] [--report] [--out=DIR]

trains every run with the CLI (`python -m jaxlm.main`) in its own workdir
`<out>/runs/<overrides>` (default out: `experiments/<name>/results`), N at a
time, and writes `results.md`, `results.csv`, `runs.csv` and PNG plots to
`<out>` (see `jaxlm.sweep_report`). A restarted sweep skips finished runs and
the trainer resumes unfinished ones from their checkpoints. Random searches may
use successive halving: every run trains to the first rung, the best 1/eta go on
to the next, and so on, each continuing from its own checkpoint.

Example `sweep.py`:

  from jaxlm.sweep import Choice, LogUniform, Sweep

  def get_sweep():
    return Sweep(config="configs/shakespeare_char.py",
                 overrides={"num_train_steps": 300},
                 random={"optimizer.learning_rate": LogUniform(1e-4, 1e-2),
                         "model.position": Choice(["rope", "alibi"])},
                 num_samples=8, seeds=1, metric="eval_loss")
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DONE_FILE = "sweep_run.json"  # Written in a run's workdir when it finished (status 'done').
ATTEMPTS_FILE = "sweep_attempts.jsonl"  # One row per trainer process: wall time, exit code.
LOG_FILE = "sweep.log"  # The trainer's stdout/stderr, appended per attempt.


# ----------------------------------------------------------------------------- definition


def _sig(x: float, digits: int = 3) -> float:
  """x rounded to `digits` significant digits (so a run's name shows its exact value)."""
  return float(f"{x:.{digits}g}")


@dataclasses.dataclass(frozen=True)
class LogUniform:
  """Uniform in log space on [low, high] (learning rates, weight decay, ...)."""

  low: float
  high: float
  integer: bool = False

  def __post_init__(self):
    if not 0 < self.low <= self.high:
      raise ValueError(f"LogUniform needs 0 < low <= high, got ({self.low}, {self.high}).")

  def sample(self, rng: np.random.Generator):
    v = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
    return int(round(v)) if self.integer else _sig(v)


@dataclasses.dataclass(frozen=True)
class Uniform:
  low: float
  high: float
  integer: bool = False

  def __post_init__(self):
    if self.low > self.high:
      raise ValueError(f"Uniform needs low <= high, got ({self.low}, {self.high}).")

  def sample(self, rng: np.random.Generator):
    v = rng.uniform(self.low, self.high)
    return int(round(v)) if self.integer else _sig(v)


@dataclasses.dataclass(frozen=True)
class Choice:
  values: Sequence[Any]

  def __post_init__(self):
    if not self.values:
      raise ValueError("Choice needs at least one value.")

  def sample(self, rng: np.random.Generator):
    return self.values[int(rng.integers(len(self.values)))]


@dataclasses.dataclass(frozen=True)
class Halving:
  """Successive halving for random searches: rungs at `min_steps * eta^k`.

  Every run trains to the first rung; the best `1/eta` (by the sweep's metric at
  that step) continue to the next rung, until `num_train_steps`. Paused runs
  keep their checkpoints and learning-rate schedule, so a promoted run is the
  same as one trained straight through.
  """

  min_steps: int
  eta: int = 3

  def rungs(self, num_steps: int) -> list[int]:
    if self.min_steps <= 0 or self.eta < 2:
      raise ValueError(f"Halving needs min_steps > 0 and eta >= 2, got {self}.")
    out, r = [], self.min_steps
    while r < num_steps:
      out.append(r)
      r *= self.eta
    return out + [num_steps]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """What to run. Override keys are config paths without `config.` (`model.position`)."""

  config: str  # Base config path (+ ':arg'), relative to the repository root.
  overrides: dict = dataclasses.field(default_factory=dict)  # Fixed for every run.
  grid: dict = dataclasses.field(default_factory=dict)  # key -> list of values (product).
  random: dict = dataclasses.field(default_factory=dict)  # key -> LogUniform/Uniform/Choice.
  num_samples: int = 0  # Random draws (each combined with every grid point).
  seeds: int = 1  # Runs per point, with config.seed = 0..seeds-1.
  metric: str = "eval_loss"  # A metrics.jsonl key; runs are ranked by its final value.
  goal: str = "min"  # min | max.
  search_seed: int = 0  # Seeds the random draws: same seed, same runs.
  extra_eval_seq_lens: tuple = ()  # Also evaluate the final model at these lengths.
  halving: Halving | None = None  # Successive halving (random searches).
  plot_logx: tuple = ()  # Swept keys whose metric plot uses a log x axis (auto for LogUniform).
  description: str = ""  # One line for the report.

  def __post_init__(self):
    if self.goal not in ("min", "max"):
      raise ValueError(f"Sweep.goal={self.goal!r}: use 'min' or 'max'.")
    if self.seeds < 1:
      raise ValueError(f"Sweep.seeds={self.seeds}: use 1 or more.")
    if self.random and self.num_samples < 1:
      raise ValueError("Sweep.random is set but num_samples is 0: set how many draws to make.")
    both = set(self.grid) & set(self.random)
    if both:
      raise ValueError(f"Keys both in grid and random: {sorted(both)}. Keep each in one.")
    for k, d in self.random.items():
      if not hasattr(d, "sample"):
        raise ValueError(f"Sweep.random[{k!r}]={d!r}: use LogUniform, Uniform or Choice.")
    for k, vs in self.grid.items():
      if isinstance(vs, (str, bytes)) or not isinstance(vs, Sequence) or not vs:
        raise ValueError(f"Sweep.grid[{k!r}] must be a non-empty list of values.")

  @property
  def swept(self) -> list[str]:
    return [*self.grid, *self.random]


@dataclasses.dataclass(frozen=True)
class RunSpec:
  name: str  # Workdir name: the overrides, 'key=value' joined by ','.
  group: str  # The name without the seed: runs of one group are averaged.
  overrides: dict  # Swept values and the seed (fixed overrides are in the Sweep).


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.3g}"
  return str(v)


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
  """Last path component where unambiguous (`optimizer.learning_rate` -> `learning_rate`)."""
  last = [k.rsplit(".", 1)[-1] for k in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def _name(values: dict, short: dict[str, str]) -> str:
  parts = [f"{short.get(k, k)}={_fmt(v)}" for k, v in values.items()]
  name = ",".join(parts) or "base"
  return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def expand(sweep: Sweep) -> list[RunSpec]:
  """Every run of the sweep, in a fixed order; the same sweep gives the same runs."""
  grid_points = [dict(zip(sweep.grid, vs, strict=True))
                 for vs in itertools.product(*sweep.grid.values())] or [{}]
  rng = np.random.default_rng(sweep.search_seed)
  samples = [{k: d.sample(rng) for k, d in sweep.random.items()}
             for _ in range(sweep.num_samples)] if sweep.random else [{}]
  short = _short_keys([*sweep.swept, "seed"])
  runs, seen = [], set()
  for g in grid_points:
    for r in samples:
      point = {**g, **r}
      group = _name(point, short)
      if group in seen:  # A repeated random draw: train it once.
        continue
      seen.add(group)
      for s in range(sweep.seeds):
        values = {**point, "seed": s}
        runs.append(RunSpec(_name(values, short), group, values))
  return runs


def load_sweep(experiment: str) -> Sweep:
  """`get_sweep()` from `<experiment>/sweep.py` (or a path to a .py file)."""
  path = experiment if experiment.endswith(".py") else os.path.join(experiment, "sweep.py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found. Fix: an experiment folder holds a sweep.py that "
                            "defines get_sweep() -> jaxlm.sweep.Sweep (see README, Experiments).")
  spec = importlib.util.spec_from_file_location("_jaxlm_sweep_def", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise AttributeError(f"{path} does not define get_sweep(). Fix: add `def get_sweep(): "
                         "return Sweep(...)`.")
  sweep = module.get_sweep()
  if not isinstance(sweep, Sweep):
    raise TypeError(f"{path}: get_sweep() returned {type(sweep).__name__}, not jaxlm.sweep.Sweep.")
  return sweep


# ----------------------------------------------------------------------------- running


def resolve_config(config: str) -> str:
  """The config path made absolute (relative paths are from the repository root)."""
  path, sep, arg = config.partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(REPO, path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"Sweep.config={config!r}: {path} does not exist.")
  return os.path.abspath(path) + sep + arg


def _flag_value(v) -> str:
  if isinstance(v, (tuple, list)):
    return "(" + ",".join(_flag_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
  return repr(v) if isinstance(v, float) else str(v)


def train_command(sweep: Sweep, spec: RunSpec, workdir: str, stop_after: int = 0) -> list[str]:
  args = [sys.executable, "-m", "jaxlm.main", f"--config={resolve_config(sweep.config)}",
          f"--workdir={os.path.abspath(workdir)}"]
  for k, v in {**sweep.overrides, **spec.overrides}.items():
    args.append(f"--config.{k}={_flag_value(v)}")
  if stop_after:
    args.append(f"--config.stop_after_steps={stop_after}")
  return args


def display_command(sweep: Sweep, spec: RunSpec, workdir: str = "WORKDIR") -> str:
  """The command a reader can paste to reproduce one run (repository root, relative paths)."""
  args = ["python", "-m", "jaxlm.main", f"--config={sweep.config}", f"--workdir={workdir}"]
  args += [f"--config.{k}={_flag_value(v)}" for k, v in {**sweep.overrides,
                                                        **spec.overrides}.items()]
  return " ".join(args)


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


def read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


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
        for seq_len in (self.sweep.extra_eval_seq_lens if rc == 0 and not stop_after else ()):
          target = os.path.join(wd, f"eval_len{seq_len}.json")
          subprocess.run([sys.executable, "-m", "jaxlm.restore", f"--workdir={wd}",
                          f"--seq_len={seq_len}", f"--out={target}"], cwd=REPO, env=env,
                         stdout=log, stderr=subprocess.STDOUT)
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
  from jaxlm import sweep_report
  specs = expand(sweep)
  runner = Runner(sweep, out, parallel, log)
  if sweep.halving is None:
    return runner.run_all(specs)
  num_steps = int(sweep.overrides.get("num_train_steps") or 0)
  if not num_steps:
    raise ValueError("Sweep.halving needs overrides['num_train_steps'] (the full budget).")
  alive, statuses = list(specs), {}
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


def _mark_stopped(workdir: str, step: int) -> None:
  with open(os.path.join(workdir, DONE_FILE), "w") as f:
    json.dump({"status": "stopped", "stopped_at": step, "returncode": 0}, f)


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
  import argparse
  p = argparse.ArgumentParser(prog="python -m jaxlm.sweep", description=__doc__.split("\n")[0])
  p.add_argument("experiment", help="experiments/<name> (a folder with sweep.py).")
  p.add_argument("--parallel", type=int, default=1, help="Trainer processes at once.")
  p.add_argument("--report", action="store_true", help="Only write the report; train nothing.")
  p.add_argument("--out", default="", help="Output dir (default: <experiment>/results).")
  p.add_argument("--dry_run", action="store_true", help="Print the runs' commands and stop.")
  a = p.parse_args(argv)
  from jaxlm import sweep_report
  try:
    sweep = load_sweep(a.experiment)
  except (OSError, ValueError, TypeError, AttributeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  out = a.out or os.path.join(a.experiment, "results")
  specs = expand(sweep)
  if a.dry_run:
    for s in specs:
      print(display_command(sweep, s, os.path.join(out, "runs", s.name)))
    return 0
  t0, load0 = time.time(), _loadavg()
  if not a.report:
    print(f"{len(specs)} runs -> {out} (parallel {a.parallel})", flush=True)
    statuses = run_sweep(sweep, out, a.parallel, log=lambda m: print(m, flush=True))
    failed = [n for n, st in statuses.items() if st == "failed"]
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


if __name__ == "__main__":  # Run the imported module's main: one Sweep class, not two.
  from jaxlm import sweep as _sweep
  sys.exit(_sweep.main())
