"""Test setup: 8 fake CPU devices for sharding tests, small local corpora, CLI helpers."""

import json
import os

# Must be set before jax is imported anywhere.
# Compile fast, run slow: test models are tiny, so on 2 cores XLA's compile time (LLVM's
# optimisation passes; the CPU fusion emitters, about half the compile time of a train step
# and 45% of a DP-SGD step's), not running, is most of the suite's time. Numerics are unchanged
# in kind (the same HLO); tests that compare two runs compile both the same way.
# JAXLM_TEST_FAST_COMPILE=off restores XLA's defaults.
TEST_XLA_FLAGS = ("" if os.environ.get("JAXLM_TEST_FAST_COMPILE", "") == "off" else
                  "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                  "--xla_cpu_use_fusion_emitters=false")


def cpu_env(devices: int = 1, **extra: str) -> dict:
  """os.environ for a child process with `devices` fake CPU devices (and the test XLA flags)."""
  return {**os.environ,
          "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}".strip(),
          **extra}


os.environ.setdefault("XLA_FLAGS",
                      f"--xla_force_host_platform_device_count=8 {TEST_XLA_FLAGS}".strip())
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the whole session, shared by pytest-xdist workers and
# every CLI subprocess: the same tiny train step is compiled by dozens of tests. Keys hash the
# HLO, the compile options and the flags, so a hit is the same executable.
# JAXLM_TEST_XLA_CACHE=off turns it off.
if os.environ.get("JAXLM_TEST_XLA_CACHE", "") != "off":
  import tempfile  # noqa: E402

  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # Set here: this process removes it at exit.
    _XLA_CACHE_CREATED = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
        prefix="jaxlm-tests-xla-cache-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

import random  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("JAXLM_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared",
                                                                "data"))

WORDS = ("the model learns to predict the next token from the previous ones and a small "
         "corpus of words repeats so that the loss can fall quickly while tests stay fast "
         "attention layers mix information across positions in a causal way").split()


def synthetic_text(num_paragraphs: int = 300, seed: int = 0) -> str:
  rng = random.Random(seed)
  paras = []
  for _ in range(num_paragraphs):
    n = rng.randint(8, 40)
    paras.append(" ".join(rng.choice(WORDS) for _ in range(n)) + ".")
  return "\n\n".join(paras) + "\n"


def shared_data(*parts: str) -> str:
  """A path in the shared data folder (JAXLM_SHARED_DATA, default ../shared/data).

  Missing: the test skips with the reason (pytest -rs lists it), except under CI=true,
  where it fails: CI must not pass because the data it should test on has vanished.
  """
  path = os.path.join(SHARED_DATA, *parts)
  if not os.path.exists(path):
    msg = (f"{path} not found: the shared data folder {SHARED_DATA} is missing or incomplete. "
           "Fix: set JAXLM_SHARED_DATA to the shared data folder (../shared/data from the "
           "repository root).")
    if os.environ.get("CI", "").lower() in ("true", "1"):
      pytest.fail(f"CI=true and required data is missing. {msg}", pytrace=False)
    pytest.skip(msg)
  return path


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> str:
  path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
  path.write_text(synthetic_text())
  return str(path)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """One tfds data dir for the whole session (datasets are prepared once)."""
  return str(tmp_path_factory.mktemp("tfds"))


def metric_by_step(workdir: str, key: str) -> dict:
  """{step: value} of one metric from a run's metrics.jsonl (rows without it are skipped)."""
  out = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      if key in row:
        out[row["step"]] = row[key]
  return out


def tiny_config(text_file: str, data_dir: str, **overrides):
  """A config that trains in seconds on the synthetic corpus."""
  from jaxlm.config import base_config

  c = base_config()
  c.data.path = text_file
  c.data.data_dir = data_dir
  c.data.doc_unit = "paragraph"
  c.data.batch_size = 8
  c.data.seq_len = 32
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.emb_dim = 32
  c.model.mlp_dim = 64
  c.num_train_steps = 10
  c.log_every_steps = 1
  c.eval_every_steps = 5
  c.eval_steps = 2
  c.checkpoint_every_steps = 5
  c.sample.num_tokens = 0
  c.optimizer.warmup_steps = 2
  for k, v in overrides.items():
    node = c
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def run_cli(args: list[str], env: dict | None = None, devices: int = 1,
            timeout: int = 300) -> subprocess.CompletedProcess:
  """Runs `python -m jaxlm.main ARGS` in a fresh process with `devices` CPU devices."""
  full_env = cpu_env(devices, **(env or {}))
  return subprocess.run([sys.executable, "-m", "jaxlm.main", *args], cwd=REPO, env=full_env,
                        capture_output=True, text=True, timeout=timeout)


def _spawns_processes(item) -> bool:
  """The test (or a fixture it uses) starts a fresh interpreter: jax import + compile."""
  import inspect

  fns = [getattr(item, "function", None)]
  info = getattr(item, "_fixtureinfo", None)
  for defs in (info.name2fixturedefs.values() if info is not None else ()):
    fns += [d.func for d in defs if d.baseid]  # The project's fixtures, not pytest's own.
  for fn in fns:
    try:
      src = inspect.getsource(fn) if fn is not None else ""
    except (OSError, TypeError):
      continue
    if any(s in src for s in ("run_cli(", "subprocess.", "multiprocess")):
      return True
  return False


def pytest_unconfigure(config):
  created = globals().get("_XLA_CACHE_CREATED")
  if created and not hasattr(config, "workerinput"):  # The xdist controller or a plain run.
    import shutil

    shutil.rmtree(created, ignore_errors=True)


def _measured_slow() -> set[str]:
  """Node ids listed in tests/slow_tests.txt (measured >= 3 s; see its header)."""
  with open(os.path.join(REPO, "tests", "slow_tests.txt")) as f:
    return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def pytest_collection_modifyitems(config, items):
  """`slow`: tests that start other Python processes (CLI end to end, several processes),
  tests measured at >= 3 s (tests/slow_tests.txt), and any marked `@pytest.mark.slow` by hand.
  `pytest -m "not slow"` skips them."""
  measured = _measured_slow()
  for item in items:
    if _spawns_processes(item) or item.nodeid in measured:
      item.add_marker(pytest.mark.slow)
