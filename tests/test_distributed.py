"""Two processes on 127.0.0.1 (CPU, 2 devices each, gloo collectives) through jax.distributed:
the same losses as one process on the same global mesh and batch, a resume across processes,
one writer, and a clear error when the coordinator never comes up."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
from conftest import REPO, cpu_env, run_cli, tiny_config

from jaxlm import train
from jaxlm.data import shards, tokenizers

OVERRIDES = {"num_train_steps": 6, "checkpoint_every_steps": 3, "eval_every_steps": 3,
             "eval_steps": 1, "log_every_steps": 1, "data.shards": 2}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _args(workdir, text_file, data_dir):
  flat = {**OVERRIDES, "data.path": text_file, "data.data_dir": data_dir,
          "data.doc_unit": "paragraph", "data.batch_size": 8, "data.seq_len": 32,
          "model.num_layers": 2, "model.num_heads": 2, "model.emb_dim": 32, "model.mlp_dim": 64,
          "optimizer.warmup_steps": 2, "sample.num_tokens": 0,
          "optimizer.learning_rate": tiny_config("", "").optimizer.learning_rate,
          "cpu_devices": 0}  # As tiny_config (the reference run), whatever default.py says.
  return ["--config=configs/default.py", f"--workdir={workdir}",
          *[f"--config.{k}={v}" for k, v in flat.items()]]


def _launch(tmp_path, name, args, faults="", timeout=600):
  """Starts processes 0 and 1 (2 CPU devices each); returns [(returncode, stderr)]."""
  port = _free_port()
  procs, logs = [], []
  for i in range(2):
    env = cpu_env(2, JAXLM_FAULTS=faults)
    log = open(tmp_path / f"{name}_{i}.log", "w+")  # Files, not pipes: no pipe deadlock.
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "jaxlm.main", *args, f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", f"--process_id={i}", "--distributed_timeout=120"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True))
    logs.append(log)
  out = []
  for p, log in zip(procs, logs, strict=True):
    p.wait(timeout=timeout)
    log.seek(0)
    out.append((p.returncode, log.read()))
    log.close()
  return out


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _by_step(rows, key):
  return {r["step"]: r[key] for r in rows if key in r}


def test_shards_make_the_same_global_batch_on_any_process_count(text_file, data_dir):
  c = tiny_config(text_file, data_dir, **{"data.shards": 2})
  tok = tokenizers.ByteTokenizer()
  one = shards.ShardedIterator(c.data, tok, 0, 0, 1)
  parts = [shards.ShardedIterator(c.data, tok, 0, i, 2) for i in range(2)]
  assert one.shard_ids == [0, 1] and [p.shard_ids for p in parts] == [[0], [1]]
  for _ in range(3):
    whole, halves = next(one), [next(p) for p in parts]
    for k in whole:
      np.testing.assert_array_equal(whole[k], np.concatenate([h[k] for h in halves]))
  merged = shards.merge_states([p.get_state() for p in parts])
  assert merged == one.get_state()  # A checkpoint from 2 processes resumes on 1, and back.


def test_two_processes_match_one_and_resume(tmp_path, text_file, data_dir):
  ref = tmp_path / "ref"
  c = tiny_config(text_file, data_dir, **OVERRIDES)
  train.train_and_evaluate(c, str(ref), devices=jax.devices()[:4])
  want = _by_step(_rows(ref), "train_loss")

  wd = tmp_path / "multi"
  fresh_tfds = str(tmp_path / "tfds")  # Process 0 prepares it while process 1 waits.
  out = _launch(tmp_path, "a", _args(wd, text_file, fresh_tfds),
                faults="sigkill_after_checkpoint@3")
  # Process 0 kills itself after checkpoint 3; process 1 too (or it is brought down with it).
  assert out[0][0] == -9 and out[1][0] != 0, out[0][1][-3000:] + out[1][1][-3000:]
  assert "process 0/2, 4 devices" in out[0][1]
  assert "step 1/6" in out[0][1] and "step 1/6" not in out[1][1]  # Only process 0 logs.
  rows = _rows(wd)
  assert [r["step"] for r in rows if "train_loss" in r] == [1, 2, 3]  # One writer.
  assert sorted(os.listdir(wd / "checkpoints")) == ["3"]

  out = _launch(tmp_path, "b", _args(wd, text_file, fresh_tfds))
  assert [rc for rc, _ in out] == [0, 0], out[0][1][-3000:] + out[1][1][-3000:]
  assert "Resumed from step 3" in out[0][1]
  got = _by_step(_rows(wd), "train_loss")
  assert sorted(got) == list(range(1, 7))
  np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(got)],
                             rtol=1e-6)


def test_missing_coordinator_is_a_clear_error_not_a_hang(tmp_path, text_file, data_dir):
  port = _free_port()  # Nothing listens there.
  t0 = time.time()
  p = run_cli(_args(tmp_path / "w", text_file, data_dir) + [
      f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", "--process_id=1",
      "--distributed_timeout=3"], timeout=120)
  assert p.returncode == 1, p.stderr[-2000:]
  assert f"no coordinator at 127.0.0.1:{port} after 3 s" in p.stderr and "Fix:" in p.stderr
  assert time.time() - t0 < 100
