"""Every shipped experiment's sweep loads, expands, and names only config fields that exist with
values of the right type: an experiment that drifts from the code fails here, not hours into a
sweep."""

import glob
import importlib.util
import os

import pytest
from conftest import REPO

from jaxlm.lab import sweep_spec

EXPERIMENTS = sorted(os.path.dirname(p) for p in glob.glob(
    os.path.join(REPO, "experiments", "*", "sweep.py")))


def _config(path_arg: str):
  path, _, arg = path_arg.partition(":")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg or None)


def _apply(config, overrides: dict) -> None:
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise KeyError(f"{key} is not a config field")
    node[leaf] = type(node[leaf])(value) if isinstance(node[leaf], tuple) else value


def test_the_experiments_are_found():
  assert len(EXPERIMENTS) >= 7, EXPERIMENTS


@pytest.mark.parametrize("exp", EXPERIMENTS, ids=os.path.basename)
def test_every_run_of_every_experiment_builds_its_config(exp, tmp_path):
  sweep = sweep_spec.load_sweep(exp)
  specs = sweep_spec.expand_prerequisites(sweep) + sweep_spec.expand(sweep)
  assert specs
  for spec in specs:
    config, values = sweep_spec.run_config(sweep, spec, str(tmp_path))
    c = _config(sweep_spec.resolve_config(config))
    _apply(c, values)


def test_a_misspelt_field_fails(tmp_path):
  """Negative control: the same check on an override naming no field."""
  c = _config(sweep_spec.resolve_config("configs/default.py"))
  with pytest.raises(KeyError, match="model.num_layerz"):
    _apply(c, {"model.num_layerz": 2})
  with pytest.raises(TypeError):
    _apply(c, {"model.num_layers": "two"})
