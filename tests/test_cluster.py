"""Cluster auto-detection (`--distributed=auto`): SLURM and Open MPI environments simulated on
127.0.0.1 form one job with no jaxlm flags and match one process; a laptop finds no cluster;
processes that disagree on the config or the data files fail naming the difference."""

import os
import random
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, cpu_env, run_cli, tiny_config
from test_distributed import OVERRIDES, _args, _by_step, _rows

from jaxlm import distributed, train
from jaxlm.distributed import DistributedError, Plan

CLUSTER_VARS = ("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
                "JAX_LOCAL_DEVICE_IDS", "KUBERNETES_", "TPU_", "MEGASCALE_")
SLURM_BASE, OMPI_BASE = 65535 - 2**12 + 1, 65535 - 2**12 + 1  # JAX's port = base + job % 4096.


def _clean_env() -> dict:
  return {k: v for k, v in os.environ.items() if not k.startswith(CLUSTER_VARS)}


@pytest.fixture
def no_cluster(monkeypatch):
  for k in list(os.environ):
    if k.startswith(CLUSTER_VARS):
      monkeypatch.delenv(k)


def _slurm(job: int, ntasks: int, procid: int, nodes: str = "localhost") -> dict:
  """What `srun` sets in each task (the variables JAX's SlurmCluster reads)."""
  return {"SLURM_JOB_ID": str(job), "SLURM_STEP_NODELIST": nodes, "SLURM_NTASKS": str(ntasks),
          "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid),
          "SLURM_STEP_NUM_NODES": "1"}


def _ompi(job: int, size: int, rank: int, host: str = "127.0.0.1") -> dict:
  """What `mpirun` (Open MPI 4) sets in each rank (the variables JAX's OmpiCluster reads)."""
  return {"OMPI_MCA_orte_hnp_uri": f"{job * 2**12}.0;tcp://{host}:45555",
          "OMPI_COMM_WORLD_SIZE": str(size), "OMPI_COMM_WORLD_RANK": str(rank),
          "OMPI_COMM_WORLD_LOCAL_RANK": str(rank)}


def _free_port_in(lo: int, hi: int) -> int:
  for _ in range(200):
    port = random.randint(lo, hi)
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port))
        return port
      except OSError:
        continue
  raise RuntimeError(f"no free port in [{lo}, {hi}]")


# ------------------------------------------------------------------ planning (no JAX job)


def test_laptop_run_detects_nothing_and_never_initializes(no_cluster, monkeypatch):
  def boom(*a, **k):
    raise AssertionError("jax.distributed.initialize must not be called on a laptop run")
  monkeypatch.setattr(jax.distributed, "initialize", boom)
  assert distributed.detect_cluster() is None
  assert distributed.plan("auto", None, None, None) is None
  assert distributed.join("auto", None, None, None) is None
  assert distributed.join("off", None, None, None) is None


def test_slurm_environment_is_read(no_cluster, monkeypatch):
  for k, v in _slurm(1234, 4, 2, nodes="node[007-010],other").items():
    monkeypatch.setenv(k, v)
  assert distributed.detect_cluster().name == "slurm"
  assert distributed.plan("auto", None, None, None) == Plan(
      "slurm", f"node007:{SLURM_BASE + 1234 % 4096}", 4, 2)
  # Explicit flags win over what the cluster says.
  assert distributed.plan("auto", "10.1.2.3:999", None, 3) == Plan("slurm", "10.1.2.3:999", 4, 3)
  assert distributed.plan("off", None, None, None) is None  # The override: one process.
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.9.9.9:555")  # JAX_* variables win too.
  assert distributed.plan("auto", None, None, None) == Plan("slurm", "10.9.9.9:555", 4, 2)
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
  monkeypatch.setenv("SLURM_NTASKS", "1")  # salloc + one task: nothing to join, no waiting.
  monkeypatch.setenv("SLURM_PROCID", "0")
  assert distributed.plan("auto", None, None, None) is None


def test_ompi_environment_is_read(no_cluster, monkeypatch):
  for k, v in _ompi(5, 3, 1, host="10.0.0.7").items():
    monkeypatch.setenv(k, v)
  assert distributed.plan("auto", None, None, None) == Plan(
      "ompi", f"10.0.0.7:{OMPI_BASE + 5}", 3, 1)


def test_modes_and_bad_settings_are_clear_errors(no_cluster, monkeypatch):
  with pytest.raises(DistributedError, match="--distributed=on but no cluster was detected"):
    distributed.plan("on", None, None, None)
  with pytest.raises(DistributedError, match="--distributed=off but --process_id given"):
    distributed.plan("off", None, None, 1)
  with pytest.raises(DistributedError, match="Fix: use one of auto, on, off"):
    distributed.plan("maybe", None, None, None)
  assert distributed.plan("on", "h:1", 2, 1) == Plan("flags", "h:1", 2, 1)
  for k, v in _slurm(1, 2, 5).items():  # PROCID beyond NTASKS.
    monkeypatch.setenv(k, v)
  with pytest.raises(DistributedError, match=r"--process_id=5 must be in \[0, 2\)"):
    distributed.plan("auto", None, None, None)


def test_fingerprint_differences_name_the_config_field_and_the_file(tmp_path):
  a, b = tmp_path / "a.txt", tmp_path / "b.txt"
  a.write_text("same text\n")
  b.write_text("other\n")
  c0 = tiny_config(str(tmp_path / "*.txt"), "/tmp/d")
  fp0 = distributed.run_fingerprint(c0, {"workdir": "/w"})
  assert distributed.differences([fp0, dict(fp0)]) == []  # Negative control: agreement.
  assert fp0[f"data file {a}"].startswith("sha256:")
  b.write_text("changed on one host\n")
  c1 = tiny_config(str(tmp_path / "*.txt"), "/tmp/d", **{"model.num_layers": 3})
  diffs = distributed.differences([fp0, distributed.run_fingerprint(c1, {"workdir": "/w"})])
  assert [d.split(":")[0] for d in diffs] == ["config.model.num_layers", f"data file {b}"]
  assert "process 0 has 2, process 1 has 3" in diffs[0]
  os.remove(a)
  diffs = distributed.differences([fp0, distributed.run_fingerprint(c0, {"workdir": "/w"})])
  assert f"data file {a}: process 0 has sha256:" in diffs[0]
  assert "process 1 has (absent)" in diffs[0]


def test_cli_distributed_flag(no_cluster, tmp_path, text_file, data_dir):
  """From the command line: --distributed=on without a job is a one-line error, before any
  work; --distributed=off with a SLURM allocation's variables trains as one process."""
  args = _args(tmp_path / "w", text_file, data_dir)
  p = run_cli(args + ["--distributed=on"], timeout=300)
  assert p.returncode == 1 and "error: --distributed=on but no cluster was detected" in p.stderr
  assert not (tmp_path / "w").exists()
  p = run_cli(args + ["--distributed=off", "--config.num_train_steps=1"],
              env=_slurm(77, 2, 1), timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "Distributed job" not in p.stderr and "process 0/1" in p.stderr


# ------------------------------------------------------------------ real jobs on 127.0.0.1


def _launch_cluster(tmp_path, name, kind, args_per_process, timeout=600):
  """Two processes (2 CPU devices each) given only a simulated cluster environment."""
  if kind == "slurm":
    port = _free_port_in(SLURM_BASE, 65535)
    envs = [_slurm(port - SLURM_BASE + 4096 * 7, 2, i) for i in range(2)]
  else:
    port = _free_port_in(OMPI_BASE, 65535)
    envs = [_ompi(port - OMPI_BASE + 4096 * 3, 2, i) for i in range(2)]
  procs, logs = [], []
  for i in range(2):
    env = {**_clean_env(), **envs[i], "XLA_FLAGS": cpu_env(2)["XLA_FLAGS"]}
    log = open(tmp_path / f"{name}_{i}.log", "w+")
    procs.append(subprocess.Popen([sys.executable, "-m", "jaxlm.main", *args_per_process[i]],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  text=True))
    logs.append(log)
  out = []
  for p, log in zip(procs, logs, strict=True):
    try:
      p.wait(timeout=timeout)
    finally:
      if p.poll() is None:
        p.kill()
    log.seek(0)
    out.append((p.returncode, log.read()))
    log.close()
  return out, port


@pytest.fixture(scope="module")
def reference(tmp_path_factory, text_file, data_dir):
  ref = tmp_path_factory.mktemp("ref")
  train.train_and_evaluate(tiny_config(text_file, data_dir, **OVERRIDES), str(ref),
                           devices=jax.devices()[:4])
  return _by_step(_rows(ref), "train_loss")


@pytest.mark.parametrize("kind", ["slurm", "ompi"])
def test_detected_cluster_matches_one_process(kind, reference, tmp_path, text_file, data_dir):
  wd = tmp_path / "w"
  args = _args(wd, text_file, data_dir)  # The plain command: no jaxlm distributed flags.
  assert not any(a.startswith(("--coordinator", "--num_proc", "--process_id", "--distributed"))
                 for a in args)
  out, port = _launch_cluster(tmp_path, kind, kind, [args, args])
  assert [rc for rc, _ in out] == [0, 0], out[0][1][-3000:] + out[1][1][-3000:]
  for i in range(2):
    assert f"Distributed job (cluster {kind} detected): process {i} of 2" in out[i][1]
    assert f"Joined (cluster {kind} detected): process {i}/2, 2 local devices, " \
           "4 global devices" in out[i][1]
  assert f":{port}" in out[0][1]  # The coordinator JAX derived from the job id.
  assert "All 2 processes agree on the config and data files" in out[0][1]
  got = _by_step(_rows(wd), "train_loss")
  assert sorted(got) == sorted(reference) == list(range(1, 7))
  np.testing.assert_allclose([got[s] for s in sorted(got)],
                             [reference[s] for s in sorted(got)], rtol=1e-6)


def test_processes_that_disagree_fail_naming_the_difference(tmp_path, text_file, data_dir):
  base = _args(tmp_path / "w", text_file, data_dir)
  out, _ = _launch_cluster(tmp_path, "mismatch", "slurm",
                           [base, base + ["--config.model.num_layers=3"]], timeout=300)
  for rc, log in out:
    assert rc == 1, log[-3000:]
    assert "disagree on the run: config.model.num_layers: process 0 has 2, process 1 has 3" \
        in log, log[-3000:]
  assert not (tmp_path / "w" / "checkpoints").exists()  # Failed before any training.
