"""The test suite's own rules: required shared data fails under CI, skips are reported."""

import conftest
import pytest


def test_missing_shared_data_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
  monkeypatch.setattr(conftest, "SHARED_DATA", str(tmp_path / "gone"))
  monkeypatch.delenv("CI", raising=False)
  with pytest.raises(pytest.skip.Exception, match="JAXLM_SHARED_DATA"):
    conftest.shared_data("ptb", "ptb.train.txt")
  monkeypatch.setenv("CI", "true")
  with pytest.raises(pytest.fail.Exception, match=r"CI=true.*gone.*JAXLM_SHARED_DATA"):
    conftest.shared_data("ptb", "ptb.train.txt")
  (tmp_path / "gone" / "ptb").mkdir(parents=True)
  (tmp_path / "gone" / "ptb" / "ptb.train.txt").write_text("x")
  assert conftest.shared_data("ptb", "ptb.train.txt").endswith("ptb.train.txt")


def test_pytest_reports_skips_and_knows_the_slow_marker():
  import tomllib

  with open(conftest.REPO + "/pyproject.toml", "rb") as f:
    opts = tomllib.load(f)["tool"]["pytest"]["ini_options"]
  addopts = opts["addopts"].split()
  assert "-rs" in addopts  # Every skip is listed with its reason.
  assert addopts[addopts.index("-n") + 1] == "auto"  # One xdist worker per core.
  assert any(m.startswith("slow: ") for m in opts["markers"])


def test_the_suite_compiles_once_and_fast():
  """Children of the suite inherit the shared XLA compilation cache and the fast-compile
  flags (set before jax is imported, in conftest)."""
  import os

  env = conftest.cpu_env(2)
  assert env["XLA_FLAGS"].startswith("--xla_force_host_platform_device_count=2")
  assert conftest.TEST_XLA_FLAGS in env["XLA_FLAGS"]
  if os.environ.get("JAXLM_TEST_XLA_CACHE", "") != "off":
    assert os.path.isdir(env["JAX_COMPILATION_CACHE_DIR"])


def test_tests_that_start_processes_are_marked_slow():
  from types import SimpleNamespace

  import test_cli

  cli_tests = [f for n, f in vars(test_cli).items() if n.startswith("test_") and callable(f)]
  assert any(conftest._spawns_processes(SimpleNamespace(function=f)) for f in cli_tests)
  assert not conftest._spawns_processes(
      SimpleNamespace(function=test_pytest_reports_skips_and_knows_the_slow_marker))


def test_measured_slow_tests_are_marked_and_name_real_files():
  """tests/slow_tests.txt names tests of existing files; a listed test gets the marker, an
  unlisted in-process test does not (the quick loop keeps it)."""
  import os

  measured = conftest._measured_slow()
  assert len(measured) > 50
  assert all(os.path.isfile(os.path.join(conftest.REPO, n.split("::")[0])) for n in measured)

  class Item:
    def __init__(self, nodeid):
      self.nodeid, self.function, self.markers = nodeid, None, []

    def add_marker(self, m):
      self.markers.append(m.name)

  listed, unlisted = Item(sorted(measured)[0]), Item("tests/test_suite.py::not_listed")
  conftest.pytest_collection_modifyitems(None, [listed, unlisted])
  assert listed.markers == ["slow"] and unlisted.markers == []
