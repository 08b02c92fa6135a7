"""The workdir module and the workdir guarantees (issue 17): glob characters refused before any
work, every loader checks the saved fingerprints, a refused resume changes nothing, readers
never delete, atomic files with one-line errors, no duplicate metrics rows after a resume, and
`gs://`-style paths through etils.epath."""

import errno
import glob
import json
import logging
import os
import shutil

import jax
import pytest
from conftest import tiny_config
from etils import epath
from etils.epath import testing as epath_testing

from jaxlm import checkpoint as ckpt_lib
from jaxlm import evaluate, faults, inference, pretrained, restore, train
from jaxlm import workdir as wd_lib
from jaxlm.metric_writer import MetricWriter


def _train(config, workdir):
  return train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory, text_file, data_dir):
  """A 4-step run with checkpoints 2 and 4 (metrics at every step)."""
  wd = tmp_path_factory.mktemp("two") / "run"
  c = tiny_config(text_file, data_dir, num_train_steps=4, checkpoint_every_steps=2,
                  eval_every_steps=2, eval_steps=1)
  _train(c, wd)
  return str(wd), c


def _copy(src: str, tmp_path) -> str:
  wd = str(tmp_path / "run")
  shutil.copytree(src, wd)
  return wd


def _garble(wd: str, step: int) -> None:
  """XORs a few hundred bytes in every array-data file of checkpoint `step`.

  Every file, not only the largest: which file holds the parameters (rather than the
  optimizer's moments) depends on how orbax packs the arrays, and a step whose parameters are
  intact rightly loads for inference."""
  files = glob.glob(os.path.join(wd, "checkpoints", str(step), "state", "**", "d", "*"),
                    recursive=True)
  assert files, f"no array data files under checkpoints/{step}"
  for path in files:
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 2, min(len(data), len(data) // 2 + 300)):
      data[i] ^= 0x5A
    open(path, "wb").write(bytes(data))


def _snapshot(wd: str) -> dict:
  out = {}
  for root, _, files in os.walk(wd):
    for f in files:
      p = os.path.join(root, f)
      out[os.path.relpath(p, wd)] = open(p, "rb").read()
  return out


# ----------------------------------------------------------------------------- 1: brackets


def test_glob_characters_in_the_workdir_are_refused_before_any_work(tmp_path, text_file,
                                                                    data_dir):
  wd = tmp_path / "x [1]" / "w"
  c = tiny_config(text_file, data_dir, num_train_steps=2)
  with pytest.raises(ckpt_lib.CheckpointError, match=r"contains '\[' and '\]'.*Fix"):
    _train(c, wd)
  assert not (tmp_path / "x [1]").exists()  # Nothing was created.
  with pytest.raises(ckpt_lib.CheckpointError, match=r"contains '\['"):
    inference.load_for_inference(str(tmp_path / "a[b"))
  assert wd_lib.path(tmp_path / "plain (1) {x}") == epath.Path(str(tmp_path / "plain (1) {x}"))


def test_brackets_really_break_the_storage_layer(tmp_path):
  """Why the refusal: orbax saves under a '[1]' directory without error, then cannot read it
  back (negative control: the same save under a plain name restores)."""
  import numpy as np
  import orbax.checkpoint as ocp

  tree = {"w": np.arange(8, dtype=np.float32)}
  for name, ok in (("plain", True), ("x [1]", False)):
    path = tmp_path / name / "ckpt"
    with ocp.StandardCheckpointer() as ck:
      ck.save(path, tree)
    if ok:
      with ocp.StandardCheckpointer() as ck:
        assert (ck.restore(path, tree)["w"] == tree["w"]).all()
    else:
      with pytest.raises(Exception), ocp.StandardCheckpointer() as ck:  # noqa: B017
        ck.restore(path, tree)


# ----------------------------------------------------------------------------- 2: fingerprints


def test_every_loader_checks_the_fingerprint_and_falls_back_or_names_the_step(
    two_steps, tmp_path, caplog):
  src, config = two_steps
  wd = _copy(src, tmp_path)
  assert inference.load_for_inference(wd).step == 4  # Control: intact, the latest loads.
  _garble(wd, 4)
  before = _snapshot(wd)
  with caplog.at_level(logging.WARNING):
    m = inference.load_for_inference(wd)  # generate, serve, export, quantize use this.
  assert m.step == 2 and "checkpoints/4 is corrupt" in caplog.text
  assert all(bool(jax.numpy.isfinite(x).all()) for x in jax.tree.leaves(m.params))
  with pytest.raises(ckpt_lib.CheckpointError, match="step 4 is corrupt"):
    inference.load_for_inference(wd, step=4)
  assert restore.load(wd).step == 2
  with pytest.raises(ckpt_lib.CheckpointError, match="step 4 is corrupt"):  # Not `_Corrupt`.
    evaluate.evaluate_checkpoint(config, wd, step=4)
  abstract = inference.abstract_params(m.model, m.mesh, m.rules)[0]
  with caplog.at_level(logging.WARNING):
    params = pretrained.restore_params(pretrained.resolve(wd), abstract)  # init_from
  assert "using step 2 instead" in caplog.text
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), params, m.params))
  with pytest.raises(ckpt_lib.CheckpointError, match="step 4 is corrupt"):
    pretrained.restore_params(pretrained.resolve(wd, 4), abstract)
  assert _snapshot(wd) == before  # Readers moved nothing aside.


# ----------------------------------------------------------------------------- 3: refused resume


def test_a_refused_resume_changes_nothing_in_the_workdir(two_steps, tmp_path, text_file,
                                                         data_dir):
  wd = _copy(two_steps[0], tmp_path)
  assert json.load(open(os.path.join(wd, "config.json")))["model.mlp"] == "gelu"
  before = _snapshot(wd)
  c = tiny_config(text_file, data_dir, num_train_steps=6, checkpoint_every_steps=2,
                  eval_every_steps=2, eval_steps=1, **{"model.mlp": "relu"})
  with pytest.raises(ckpt_lib.CheckpointError, match=r"model.mlp: 'gelu' -> 'relu'"):
    _train(c, wd)
  assert _snapshot(wd) == before  # config.json still says gelu; no lock, no rows, no files.
  assert inference.load_for_inference(wd).config.model.mlp == "gelu"


# ----------------------------------------------------------------------------- 4: readers


def test_readers_never_delete_or_move_and_only_the_trainer_cleans(two_steps, tmp_path,
                                                                  text_file, data_dir):
  src, config = two_steps
  wd = _copy(src, tmp_path)
  tmp = os.path.join(wd, "checkpoints", "6" + wd_lib.TMP_SUFFIX)
  os.makedirs(os.path.join(tmp, "state"))  # A trainer's save in flight.
  before = _snapshot(wd)
  inference.load_for_inference(wd)
  restore.load(wd)
  evaluate._checkpointer(wd, None)[0].close()
  pretrained.resolve(wd)
  assert os.path.isdir(tmp) and _snapshot(wd) == before
  # Another live trainer of this workdir (here: our parent process) is refused.
  wd_lib.write_json(epath.Path(wd) / wd_lib.LOCK_FILE, {"pid": os.getppid(),
                                                         "host": wd_lib.owner()["host"]})
  with pytest.raises(ckpt_lib.CheckpointError, match=f"being trained by process {os.getppid()}"):
    ckpt_lib.Checkpointer(wd)
  os.remove(os.path.join(wd, wd_lib.LOCK_FILE))
  # The owner (a trainer that accepted the workdir) deletes the killed run's tmp directory.
  c = tiny_config(text_file, data_dir, num_train_steps=6, checkpoint_every_steps=2,
                  eval_every_steps=2, eval_steps=1)
  _train(c, wd)
  assert sorted(os.listdir(os.path.join(wd, "checkpoints"))) == ["2", "4", "6"]
  assert not os.path.exists(os.path.join(wd, wd_lib.LOCK_FILE))  # Released at the end.


# ----------------------------------------------------------------------------- 6: files


def test_metrics_have_no_duplicate_rows_after_a_resume(two_steps, tmp_path, text_file,
                                                       data_dir):
  wd = _copy(two_steps[0], tmp_path)
  shutil.rmtree(os.path.join(wd, "checkpoints", "4"))  # Killed after step 4's rows, pre-save.
  with open(os.path.join(wd, "metrics.jsonl"), "a") as f:
    f.write('{"step": 4, "train_lo')  # And a row cut short by the kill.
  c = tiny_config(text_file, data_dir, num_train_steps=4, checkpoint_every_steps=2,
                  eval_every_steps=2, eval_steps=1)
  _train(c, wd)
  rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
  keys = [(r["step"], k) for r in rows for k in r if k != "step"]
  assert len(keys) == len(set(keys))
  assert sorted({r["step"] for r in rows}) == [1, 2, 3, 4]
  ref = [json.loads(line) for line in open(os.path.join(two_steps[0], "metrics.jsonl"))]
  assert len(rows) == len(ref)


def test_a_full_disk_at_restart_is_one_line_naming_the_file_which_stays_intact(
    two_steps, tmp_path, text_file, data_dir):
  wd = _copy(two_steps[0], tmp_path)
  before = open(os.path.join(wd, "config.json")).read()
  c = tiny_config(text_file, data_dir, num_train_steps=6, checkpoint_every_steps=2,
                  eval_every_steps=2, eval_steps=1)
  with faults.disk_full(limit_bytes=2048), pytest.raises(ckpt_lib.CheckpointError) as e:
    _train(c, wd)
  msg = str(e.value)
  assert "\n" not in msg and f"Cannot write {wd}/config.json" in msg and "Fix:" in msg
  assert open(os.path.join(wd, "config.json")).read() == before  # Not 2 KiB of broken JSON.
  assert not glob.glob(os.path.join(wd, ".config.json.tmp-*"))


def test_a_read_only_workdir_is_one_line_naming_the_path(tmp_path):
  def read_only(orig, path, *args, **kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

  target = epath.Path(tmp_path) / "config.json"
  with epath_testing.mock_epath(open=read_only, mkdir=read_only, makedirs=read_only):
    with pytest.raises(ckpt_lib.CheckpointError, match=f"Cannot write {target}: Read-only"):
      wd_lib.write_json(target, {"a": 1})
    with pytest.raises(ckpt_lib.CheckpointError, match="Read-only file system"):
      wd_lib.ensure_writable(tmp_path / "new")


# ----------------------------------------------------------------------------- epath


def test_a_gs_workdir_goes_through_epath(tmp_path, text_file, data_dir):
  """Every workdir file helper with a `gs://` path, on etils' mock backend mapped to a local
  folder (a real bucket is not reachable here: orbax's own gs:// I/O is untested)."""
  def local(p):
    s = os.fspath(p)
    return s.replace("gs://", f"{tmp_path}/", 1) if s.startswith("gs://") else s

  def redirect(orig, path, *args, **kwargs):
    return orig(local(path), *[local(a) if isinstance(a, str | os.PathLike) else a
                               for a in args], **kwargs)

  fns = ("exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open", "remove", "rename",
         "replace", "rmtree", "stat", "walk")
  wd = "gs://bucket/run"
  with epath_testing.mock_epath(**{f: redirect for f in fns}):
    wd_lib.ensure_writable(wd)
    wd_lib.write_config(wd, tiny_config(text_file, data_dir))
    assert wd_lib.read_config(wd).model.emb_dim == 32
    for s in (2, 4):
      (wd_lib.step_dir(wd, s) / "state").mkdir(parents=True)
    (wd_lib.checkpoint_dir(wd) / ("6" + wd_lib.TMP_SUFFIX)).mkdir()
    assert wd_lib.list_steps(wd_lib.checkpoint_dir(wd)) == [2, 4]
    assert wd_lib.resolve_step(wd, None)[1] == 4 and wd_lib.resolve_step(wd, 2)[1] == 2
    assert [p.name for p in wd_lib.half_written(wd_lib.checkpoint_dir(wd))] == ["6" +
                                                                                 wd_lib.TMP_SUFFIX]
    w = MetricWriter(wd, tensorboard=False)
    w.write(1, {"x": 1.0})
    w.write(2, {"x": 2.0})
    MetricWriter(wd, tensorboard=False, resume_step=1)
    assert wd_lib.acquire(wd).name == wd_lib.LOCK_FILE
    wd_lib.release(wd)
  local_wd = tmp_path / "bucket" / "run"
  assert [json.loads(x)["step"] for x in open(local_wd / "metrics.jsonl")] == [1]
  assert json.load(open(local_wd / "config.json"))["model.emb_dim"] == 32
  assert not (local_wd / wd_lib.LOCK_FILE).exists()


def test_tensorboard_events_are_written_without_importing_torch(tmp_path):
  """tensorboardX imports torch when it can (2.5 s per run start with the [hf] extra);
  MetricWriter refuses that one import, and torch stays importable afterwards."""
  import subprocess
  import sys

  from conftest import REPO, cpu_env
  code = ("import sys; from jaxlm.metric_writer import MetricWriter\n"
          f"w = MetricWriter({str(tmp_path)!r}); w.write(3, {{'train_loss': 1.5}}); w.close()\n"
          "print('torch' in sys.modules)\n"
          "try:\n  import torch; print('importable')\nexcept ImportError:\n  print('absent')\n")
  p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cpu_env(1),
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  loaded, after = p.stdout.split()
  assert loaded == "False" and after in ("importable", "absent")
  events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  assert events and b"train_loss" in events[0].read_bytes()


def test_a_reader_survives_steps_the_trainers_retention_deletes(two_steps, tmp_path,
                                                                monkeypatch, caplog):
  """A live trainer (keep_checkpoints) deletes old steps while a reader lists or loads them:
  the reader lists again or takes the next newest step, and says so, not "corrupt"."""
  wd = _copy(two_steps[0], tmp_path)
  m = inference.load_for_inference(wd)
  abstract = inference.abstract_params(m.model, m.mesh, m.rules)[0]
  # Deleted between listing and loading: step 4 is gone, step 2 loads (no "corrupt").
  ckpt = ckpt_lib.Checkpointer(wd, read_only=True)
  shutil.rmtree(os.path.join(wd, "checkpoints", "4"))
  with caplog.at_level(logging.INFO):
    assert ckpt.restore_params(None, abstract)[1] == 2
  ckpt.close()
  assert "deleted while loading" in caplog.text and "corrupt" not in caplog.text
  # Deleted while orbax lists the steps (its FileNotFoundError): the reader lists again.
  real, calls = ckpt_lib.ocp.CheckpointManager, []

  def flaky(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      raise FileNotFoundError(2, "No such file or directory", "checkpoints/20")
    return real(*args, **kwargs)

  monkeypatch.setattr(ckpt_lib.ocp, "CheckpointManager", flaky)
  assert inference.load_for_inference(wd).step == 2 and len(calls) == 2
  # Control: a listing that never succeeds is one error naming the directory and the fix.
  monkeypatch.setattr(ckpt_lib.ocp, "CheckpointManager", lambda *a, **k: (_ for _ in ()).throw(
      FileNotFoundError(2, "gone")))
  with pytest.raises(ckpt_lib.CheckpointError, match="steps kept vanishing.*Fix:"):
    ckpt_lib.Checkpointer(wd, read_only=True)
