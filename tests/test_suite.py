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
  with open(conftest.REPO + "/pyproject.toml") as f:
    text = f.read()
  assert 'addopts = "-q -rs"' in text and '"slow: ' in text


def test_tests_that_start_processes_are_marked_slow():
  from types import SimpleNamespace

  import test_cli

  cli_tests = [f for n, f in vars(test_cli).items() if n.startswith("test_") and callable(f)]
  assert any(conftest._spawns_processes(SimpleNamespace(function=f)) for f in cli_tests)
  assert not conftest._spawns_processes(
      SimpleNamespace(function=test_pytest_reports_skips_and_knows_the_slow_marker))
