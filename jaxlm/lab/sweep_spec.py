"""What a sweep runs: the `Sweep` definition and its expansion into named runs.

Split from `jaxlm.lab.sweep` (the runner), which re-exports every name here, so an
experiment writes `from jaxlm.lab.sweep import Sweep, RunDir, LogUniform, ...`.

A run's overrides are, in order (later wins): `Sweep.overrides`, its variant's
bundle, its grid point and random draw, its seed. Prerequisite runs are separate:
each bundle holds all of its own overrides and trains once, before every other run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

_NAME_RE = re.compile(r"^[A-Za-z0-9._+-]+$")  # Variant/prerequisite names: no '=' or ','.


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
class RunDir:
  """A prerequisite run's workdir, as an override value (`{"init_from": RunDir("pretrain")}`).

  Resolved to the absolute path `<out>/runs/<name>` when a run's command is built.
  """

  name: str


@dataclasses.dataclass(frozen=True)
class Sweep:
  """What to run. Override keys are config paths without `config.` (`model.position`).

  `variants`: named bundles of overrides, e.g. `{"lstm": {"config": "configs/lstm.py",
  "model.emb_dim": 128}, "gpt": {...}}`; every variant is combined with every grid point,
  random draw and seed; a bundle's optional "config" replaces `config` for its runs. The
  variant name leads the run's name and is the table's first column.

  `prerequisites`: named runs trained once (not per seed), in order, before all others
  (e.g. pretraining), each a bundle like a variant's (its own overrides only: `overrides`
  does not apply). A run refers to one's workdir with `RunDir(name)`; a run whose
  prerequisite failed is not started ("blocked").
  """

  config: str = ""  # Base config path (+ ':arg'), relative to the repository root.
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
  columns: tuple = ("eval_loss", "eval_ppl", "eval_bpb")  # Final metrics shown besides `metric`.
  variants: dict = dataclasses.field(default_factory=dict)  # name -> bundle of overrides.
  prerequisites: dict = dataclasses.field(default_factory=dict)  # name -> bundle; run first.

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
    self._check_bundles()

  def _check_bundles(self) -> None:
    both = set(self.variants) & set(self.prerequisites)
    if both:
      raise ValueError(f"Names both a variant and a prerequisite: {sorted(both)}. Rename one.")
    for field in ("variants", "prerequisites"):
      for name, bundle in getattr(self, field).items():
        where = f"Sweep.{field}[{name!r}]"
        if not isinstance(name, str) or not _NAME_RE.match(name):
          raise ValueError(f"{where}: names use letters, digits and ._+- only (no '=' or ',').")
        if not isinstance(bundle, dict):
          raise ValueError(f"{where} must be a dict of overrides, got {type(bundle).__name__}.")
        if not (bundle.get("config") or self.config):
          raise ValueError(f"{where} has no 'config' and Sweep.config is empty: set one.")
        swept = set(bundle) & set(self.swept) if field == "variants" else set()
        if swept:
          raise ValueError(f"{where} sets swept keys {sorted(swept)}: keep each key in one place.")
    if not self.config and not self.variants:
      raise ValueError("Sweep.config is empty: set the base config (or give every variant one).")
    known = list(self.prerequisites)
    for i, (name, bundle) in enumerate(self.prerequisites.items()):
      for ref in run_dirs(bundle):
        if ref not in known[:i]:
          raise ValueError(f"Sweep.prerequisites[{name!r}] uses RunDir({ref!r}): a prerequisite "
                           f"may only use earlier ones ({known[:i]}).")
    values = [self.overrides, *self.variants.values(), *self.grid.values()]
    for ref in {r for v in values for r in run_dirs(v)}:
      if ref not in self.prerequisites:
        raise ValueError(f"RunDir({ref!r}) names no prerequisite; known: {known}. Fix: add it "
                         "to Sweep.prerequisites.")

  @property
  def swept(self) -> list[str]:
    return [*self.grid, *self.random]


def run_dirs(values) -> list[str]:
  """Names of the prerequisites that `values` (a dict, list or value) refers to."""
  if isinstance(values, RunDir):
    return [values.name]
  if isinstance(values, dict):
    values = list(values.values())
  if isinstance(values, (list, tuple)):
    return [r for v in values for r in run_dirs(v)]
  return []


def resolve_run_dirs(values: dict, runs_dir: str) -> dict:
  """`values` with every `RunDir(name)` replaced by `<runs_dir>/<name>`."""
  return {k: os.path.join(runs_dir, v.name) if isinstance(v, RunDir) else v
          for k, v in values.items()}


@dataclasses.dataclass(frozen=True)
class RunSpec:
  name: str  # Workdir name: variant, then the overrides 'key=value', joined by ','.
  group: str  # The name without the seed: runs of one group are averaged.
  overrides: dict  # Swept values and the seed.
  variant: str = ""  # Its Sweep.variants (or prerequisites) name; '' = none.
  config: str = ""  # Its base config ('' = Sweep.config).
  fixed: dict = dataclasses.field(default_factory=dict)  # Sweep.overrides + variant bundle.
  prerequisite: bool = False  # A Sweep.prerequisites run (trained first, not ranked).

  @property
  def needs(self) -> list[str]:
    """The prerequisites this run uses."""
    return sorted(set(run_dirs(self.fixed) + run_dirs(self.overrides)))


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.3g}"
  if isinstance(v, RunDir):
    return f"<{v.name}>"
  return str(v)


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
  """Last path component where unambiguous (`optimizer.learning_rate` -> `learning_rate`)."""
  last = [k.rsplit(".", 1)[-1] for k in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last, strict=True)}


def _name(values: dict, short: dict[str, str], prefix: str = "") -> str:
  parts = [prefix] if prefix else []
  parts += [f"{short.get(k, k)}={_fmt(v)}" for k, v in values.items()]
  name = ",".join(parts) or "base"
  return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def _bundle(sweep: Sweep, bundle: dict, base: dict) -> tuple[str, dict]:
  """(config, fixed overrides) of a variant/prerequisite bundle on top of `base`."""
  rest = {k: v for k, v in bundle.items() if k != "config"}
  return bundle.get("config") or sweep.config, {**base, **rest}


def expand(sweep: Sweep) -> list[RunSpec]:
  """Every ranked run of the sweep, in a fixed order; the same sweep gives the same runs.

  Variants are the outer loop, then grid points, random draws, seeds.
  """
  grid_points = [dict(zip(sweep.grid, vs, strict=True))
                 for vs in itertools.product(*sweep.grid.values())] or [{}]
  rng = np.random.default_rng(sweep.search_seed)
  samples = [{k: d.sample(rng) for k, d in sweep.random.items()}
             for _ in range(sweep.num_samples)] if sweep.random else [{}]
  short = _short_keys([*sweep.swept, "seed"])
  runs, seen = [], set()
  for variant, bundle in (sweep.variants or {"": {}}).items():
    config, fixed = _bundle(sweep, bundle, sweep.overrides)
    for g in grid_points:
      for r in samples:
        point = {**g, **r}
        group = _name(point, short, variant)
        if group in seen:  # A repeated random draw: train it once.
          continue
        seen.add(group)
        for s in range(sweep.seeds):
          values = {**point, "seed": s}
          runs.append(RunSpec(_name(values, short, variant), group, values, variant, config,
                              fixed))
  return runs


def expand_prerequisites(sweep: Sweep) -> list[RunSpec]:
  """The prerequisite runs, in definition order (workdir `<out>/runs/<name>`)."""
  out = []
  for name, bundle in sweep.prerequisites.items():
    config, fixed = _bundle(sweep, bundle, {})
    out.append(RunSpec(name, name, {}, name, config, fixed, prerequisite=True))
  return out


def load_sweep(experiment: str) -> Sweep:
  """`get_sweep()` from `<experiment>/sweep.py` (or a path to a .py file)."""
  path = experiment if experiment.endswith(".py") else os.path.join(experiment, "sweep.py")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found. Fix: an experiment folder holds a sweep.py that "
                            "defines get_sweep() -> jaxlm.lab.sweep.Sweep (see README, "
                            "Experiments).")
  spec = importlib.util.spec_from_file_location("_jaxlm_sweep_def", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise AttributeError(f"{path} does not define get_sweep(). Fix: add `def get_sweep(): "
                         "return Sweep(...)`.")
  sweep = module.get_sweep()
  if not isinstance(sweep, Sweep):
    raise TypeError(f"{path}: get_sweep() returned {type(sweep).__name__}, "
                    "not jaxlm.lab.sweep.Sweep.")
  return sweep


# ------------------------------------------------------------------- run files and commands

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DONE_FILE = "sweep_run.json"  # Written in a run's workdir when it finished (status 'done').
ATTEMPTS_FILE = "sweep_attempts.jsonl"  # One row per trainer process: wall time, exit code.
LOG_FILE = "sweep.log"  # The trainer's stdout/stderr, appended per attempt.


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


def run_config(sweep: Sweep, spec: RunSpec, runs_dir: str) -> tuple[str, dict]:
  """(base config, all overrides) of one run, with RunDir values made paths in `runs_dir`.

  A spec made by hand without a config gets the sweep's config and fixed overrides.
  """
  config, fixed = (spec.config, spec.fixed) if spec.config else (sweep.config, sweep.overrides)
  return config, resolve_run_dirs({**fixed, **spec.overrides}, runs_dir)


def display_command(sweep: Sweep, spec: RunSpec, workdir: str = "WORKDIR") -> str:
  """The command a reader can paste to reproduce one run (repository root, relative paths);
  prerequisites' workdirs are taken to be beside `workdir`."""
  config, values = run_config(sweep, spec, os.path.dirname(workdir))
  args = ["python", "-m", "jaxlm.main", f"--config={config}", f"--workdir={workdir}"]
  args += [f"--config.{k}={_flag_value(v)}" for k, v in values.items()]
  return " ".join(args)


def read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):
    return None


# ------------------------------------------------------------------- report keys


def table_keys(sweep: Sweep) -> list[str]:
  """The columns that tell runs apart: the variant (if any), then the swept keys."""
  return ["variant", *sweep.swept] if sweep.variants else sweep.swept


def key_value(g: dict, key: str, default=None):
  """A group's (or run's) value of a table key ('variant' or a swept config key)."""
  return g.get("variant") or default if key == "variant" else g["overrides"].get(key, default)
