"""Faults injected in-process: corrupt checkpoints, failed writes, NaN policies, config changes
on resume, a restore onto another mesh. (SIGKILL and SIGTERM: tests/test_faults_cli.py.)"""

import glob
import json
import logging
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import metric_by_step, tiny_config

from jaxlm import checkpoint as ckpt_lib
from jaxlm import config as config_lib
from jaxlm import faults, resilience, train
from jaxlm.data import shards, sources


def _config(text_file, data_dir, **kw):
  base = dict(num_train_steps=8, checkpoint_every_steps=4, eval_every_steps=4, eval_steps=1)
  return tiny_config(text_file, data_dir, **{**base, **kw})


def _train(config, workdir):
  return train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def ref(tmp_path_factory, text_file, data_dir):
  """An uninterrupted 8-step run (checkpoints at 4 and 8) that other tests copy and compare."""
  wd = tmp_path_factory.mktemp("ref") / "run"
  _train(_config(text_file, data_dir), wd)
  return str(wd)


def _copy(ref, tmp_path, drop=()) -> str:
  wd = str(tmp_path / "run")
  shutil.copytree(ref, wd)
  for step in drop:
    shutil.rmtree(os.path.join(wd, "checkpoints", str(step)))
  return wd


def _corrupt(wd: str, step: int, how: str) -> None:
  d = os.path.join(wd, "checkpoints", str(step))
  if how == "meta_truncated":
    path = os.path.join(d, "meta", "metadata")
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
    return
  path = max(glob.glob(os.path.join(d, "state", "**", "d", "*"), recursive=True),
             key=os.path.getsize)  # The biggest array file: the parameters.
  data = bytearray(open(path, "rb").read())
  if how == "array_truncated":
    data = data[:len(data) // 2]
  else:  # Garbled bytes: orbax restores these without complaint; the fingerprint does not.
    for i in range(len(data) // 2, len(data) // 2 + 64):
      data[i] ^= 0x5A
  open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("how", ["array_garbled", "array_truncated", "meta_truncated"])
def test_corrupt_latest_checkpoint_is_named_and_previous_restored(ref, tmp_path, text_file,
                                                                  data_dir, how, caplog):
  wd = _copy(ref, tmp_path)
  _corrupt(wd, 8, how)
  c = _config(text_file, data_dir)
  run = train.Run(c, wd, jax.devices()[:1])
  ckpt = ckpt_lib.Checkpointer(wd, c.keep_checkpoints)
  with caplog.at_level(logging.WARNING):
    step, state, data = ckpt.restore_latest(run.abstract_state)
  ckpt.close()
  assert step == 4
  assert f"{wd}/checkpoints/8 is corrupt" in caplog.text
  assert os.path.isdir(os.path.join(wd, "corrupt_checkpoints", "8"))  # Moved aside, not lost.
  good = ckpt_lib.Checkpointer(ref, 3)
  want, want_data, _ = good.restore(4, run.abstract_state)
  good.close()
  assert data == want_data
  for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_training_resumes_past_a_corrupt_checkpoint_exactly(ref, tmp_path, text_file, data_dir):
  """Garbled step 8 -> restart from 4, retrain 5..8: the losses equal the uninterrupted run's."""
  wd = _copy(ref, tmp_path)
  _corrupt(wd, 8, "array_garbled")
  _train(_config(text_file, data_dir), wd)
  assert metric_by_step(wd, "train_loss") == metric_by_step(ref, "train_loss")
  assert metric_by_step(wd, "eval_loss") == metric_by_step(ref, "eval_loss")
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["4", "8"]


def test_no_restorable_checkpoint_is_an_error_and_moves_nothing(ref, tmp_path, text_file,
                                                                data_dir):
  wd = _copy(ref, tmp_path)
  _corrupt(wd, 8, "array_truncated")
  _corrupt(wd, 4, "meta_truncated")
  with pytest.raises(ckpt_lib.CheckpointError, match="No checkpoint .* could be restored"):
    _train(_config(text_file, data_dir), wd)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["4", "8"]


def test_disk_full_at_checkpoint_is_clear_and_keeps_the_previous(ref, tmp_path, text_file,
                                                                 data_dir):
  """A real write error (EFBIG, as from a full disk) while checkpoint 8 is written."""
  wd = _copy(ref, tmp_path, drop=[8])  # As if the run were at step 4.
  c = _config(text_file, data_dir)
  run = train.Run(c, wd, jax.devices()[:1])
  ckpt = ckpt_lib.Checkpointer(wd, 3)
  step, state, data = ckpt.restore_latest(run.abstract_state)
  with pytest.raises(ckpt_lib.CheckpointError) as e:
    train._save_checkpoint(ckpt, 8, state, data, run.meta(), {"disk_full_at_checkpoint": {8}})
  ckpt.close()
  msg = str(e.value)
  assert "Writing checkpoint step 8" in msg and "File too large" in msg
  assert "previous checkpoint (step 4) is intact" in msg and "Fix:" in msg
  names = os.listdir(os.path.join(wd, "checkpoints"))
  assert "8" not in names and "4" in names and any(ckpt_lib.TMP_SUFFIX in n for n in names)
  # Step 4 still restores and verifies. (The next run deletes the half-written step 8, as
  # test_faults_cli checks; here the failed writer lives on in this process, so not here.)
  ckpt = ckpt_lib.Checkpointer(wd, 3)
  assert ckpt.restore_latest(run.abstract_state)[0] == 4
  ckpt.close()


@pytest.mark.parametrize("change,message", [
    ({"model.emb_dim": 64}, "model.emb_dim: 32 -> 64"),
    ({"data.seq_len": 16}, "data.seq_len: 32 -> 16"),
    ({"data.tokenizer": "char"}, "tokenizer"),
])
def test_resume_refuses_incompatible_config(ref, tmp_path, text_file, data_dir, change, message):
  wd = _copy(ref, tmp_path)
  with pytest.raises((ckpt_lib.CheckpointError, sources.DataError), match=message) as e:
    _train(_config(text_file, data_dir, **change), wd)
  assert "Fix:" in str(e.value) or "fresh --workdir" in str(e.value)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["4", "8"]


def test_resume_allows_harmless_config_changes(ref, tmp_path, text_file, data_dir):
  wd = _copy(ref, tmp_path)
  out = _train(_config(text_file, data_dir, num_train_steps=10, log_every_steps=2,
                       eval_every_steps=5), wd)
  assert out["step"] == 10
  assert "10" in os.listdir(os.path.join(wd, "checkpoints"))
  assert max(metric_by_step(wd, "train_loss")) == 10


def test_restore_onto_a_different_mesh(tmp_path, text_file, data_dir):
  """Saved on 8 devices (fsdp=8), restored on 4 (data=2, fsdp=2): every array equal."""
  devs = jax.devices()
  assert len(devs) == 8
  c8 = _config(text_file, data_dir, **{"mesh.shape": (1, 8, 1)})
  run8 = train.Run(c8, str(tmp_path), devs)
  wiggle = lambda x: (x + jnp.sin(jnp.arange(x.size).reshape(x.shape)) * 9 + 1).astype(x.dtype)
  state = jax.jit(lambda s: s.replace(params=jax.tree.map(wiggle, s.params),  # Distinct values,
                                      opt_state=jax.tree.map(wiggle, s.opt_state)),  # all leaves.
                  out_shardings=run8.state_shardings)(run8.init_state())
  want = jax.tree.map(np.asarray, state)
  it = shards.ShardedIterator(c8.data, run8.tokenizer, 0)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), 3)
  ckpt.save(2, state, it.get_state(), run8.meta())
  ckpt.close()

  c4 = _config(text_file, data_dir, **{"mesh.shape": (2, 2, 1)})
  run4 = train.Run(c4, str(tmp_path), devs[:4])
  ckpt = ckpt_lib.Checkpointer(str(tmp_path), 3)
  step, got, _ = ckpt.restore_latest(run4.abstract_state)
  ckpt.close()
  assert step == 2
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(a, np.asarray(b))
  emb = got.params["embed"]["embedding"]
  assert emb.sharding.mesh.devices.size == 4 and emb.sharding.spec == run4.state_shardings.params[
      "embed"]["embedding"].spec


def test_skip_policy_drops_the_update_inside_the_jit(tmp_path, text_file, data_dir):
  c = _config(text_file, data_dir, nan_policy="skip")
  run = train.Run(c, str(tmp_path), jax.devices()[:1])
  step_fn = run.jit_train_step()
  it = shards.ShardedIterator(c.data, run.tokenizer, 0)
  state = run.init_state()
  with jax.set_mesh(run.mesh):
    before = jax.tree.map(np.asarray, state)
    state, m = step_fn(state, faults.poison_batch(run.to_global(next(it))))
    assert not np.isfinite(float(m["train_loss"])) and int(m["skipped"]) == 1
    assert int(state.step) == 1  # The data and the step counter move on ...
    for a, b in zip(jax.tree.leaves((before.params, before.opt_state)),
                    jax.tree.leaves((state.params, state.opt_state)), strict=True):
      np.testing.assert_array_equal(a, np.asarray(b))  # ... the parameters do not.
    state, m = step_fn(state, run.to_global(next(it)))
    assert np.isfinite(float(m["train_loss"])) and int(m["skipped"]) == 0
    assert not all(np.array_equal(a, np.asarray(b)) for a, b in zip(  # A real update.
        jax.tree.leaves(before.opt_state), jax.tree.leaves(state.opt_state), strict=True))


@pytest.mark.parametrize("policy,fault,expect", [
    ("skip", "nan_batch@2", "completes"),
    ("rollback", "nan_params@4", "completes"),
    ("skip", "nan_params@1", "in a row"),
])
def test_nan_policies(tmp_path, text_file, data_dir, monkeypatch, caplog, policy, fault,
                      expect):
  monkeypatch.setenv(faults.ENV, fault)
  c = _config(text_file, data_dir, nan_policy=policy, nan_max_retries=1, num_train_steps=6,
              eval_every_steps=6)
  wd = tmp_path / "run"
  if expect != "completes":  # Skipping cannot cure non-finite parameters: it gives up.
    with pytest.raises(train.TrainingError, match=expect):
      _train(c, wd)
    return
  with caplog.at_level(logging.WARNING):
    out = _train(c, wd)
  assert out["step"] == 6 and np.isfinite(out["eval_loss"])
  bad_step = 2 if policy == "skip" else 5
  losses = metric_by_step(wd, "train_loss")
  assert sorted(losses) == list(range(1, 7))
  assert [s for s, v in losses.items() if not np.isfinite(v)] == [bad_step]  # Only that step.
  rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
  last = [r for r in rows if "skipped_steps" in r][-1]
  assert last["skipped_steps"] == 1
  if policy == "skip":
    assert "train_loss is nan at step 2: update skipped" in caplog.text
    assert last["rollbacks"] == 0
  else:
    assert "at step 5: rolled back parameters and optimizer state to step 4" in caplog.text
    assert last["rollbacks"] == 1


def test_log_rows_fetched_a_step_later_equal_synced_rows(tmp_path, text_file, data_dir):
  """A log step's metrics are read one step later (the device does not wait for a row); under
  nan_policy='rollback' each log step syncs instead. Same rows either way, at the same steps;
  a run on other data is not (negative control)."""
  def rows(wd, **kw):
    _train(_config(text_file, data_dir, log_every_steps=3, num_train_steps=8, **kw), wd)
    keep = ("train_loss", "train_accuracy", "grad_norm", "lr")
    return {r["step"]: [r[k] for k in keep] for r in map(json.loads, open(wd / "metrics.jsonl"))
            if "train_loss" in r}

  deferred, synced = rows(tmp_path / "a"), rows(tmp_path / "b", nan_policy="rollback")
  assert sorted(deferred) == [3, 6, 8]  # Every 3rd step and the last (a synced step).
  assert deferred.keys() == synced.keys()
  for step in deferred:
    np.testing.assert_allclose(deferred[step], synced[step], rtol=1e-6)
  other = rows(tmp_path / "c", seed=5)
  assert not np.allclose(deferred[3], other[3], rtol=1e-6)


def test_nan_policy_is_validated():
  c = config_lib.base_config()
  c.nan_policy = "ignore"
  with pytest.raises(config_lib.ConfigError, match="nan_policy"):
    config_lib.validate(c, 1)


def test_sigint_and_sigterm_request_a_checkpointed_stop():
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  for sig in (signal.SIGINT, signal.SIGTERM):
    p = resilience.Preemption()
    assert not p.requested(1)
    os.kill(os.getpid(), sig)
    assert p.requested(2) and p.signal_name == sig.name
    p.close()
  # Handlers restored (a background CI job may start with SIGINT ignored, not the default).
  assert {s: signal.getsignal(s) for s in before} == before
