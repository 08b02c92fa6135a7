"""Loading a workdir for inference, the generate CLI, and workdir-level HF round trips."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, cpu_env
from inference_helpers import random_workdir

from jaxlm import checkpoint, hf, inference
from jaxlm.generate import Generator


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, text_file, data_dir):
  return random_workdir(str(tmp_path_factory.mktemp("wd")), text_file, data_dir,
                        **{"model.position": "learned", "model.max_len": 64})


def test_load_restores_params_only_and_rebuilds_the_config(workdir):
  m = inference.load_for_inference(workdir)
  assert m.step == 0 and m.config.model.max_len == 64
  assert isinstance(m.config.mesh.shape, tuple)  # JSON lists are tuples again.
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  meta = ckpt.restore_meta(0)
  ckpt.close()
  assert meta["num_params"] == sum(x.size for x in jax.tree.leaves(m.params))
  out = Generator(m.model, m.params, m.tokenizer, m.mesh, m.rules).generate(
      ["the"], max_new_tokens=4, temperature=0.0)
  assert len(out[0].ids) <= 4
  with pytest.raises(checkpoint.CheckpointError, match="No checkpoint for step 7"):
    inference.load_for_inference(workdir, step=7)
  with pytest.raises(checkpoint.CheckpointError, match="not a jaxlm workdir"):
    inference.load_for_inference(os.path.dirname(workdir) + "/nothing_here")


def test_hf_export_then_import_gives_a_workdir_with_the_same_model(workdir, tmp_path):
  hf.export_workdir(workdir, str(tmp_path / "hf"))
  assert os.path.exists(tmp_path / "hf" / "jaxlm_tokenizer" / "tokenizer.json")
  hf.import_to_workdir(str(tmp_path / "hf"), str(tmp_path / "back"))
  a = inference.load_for_inference(workdir)
  b = inference.load_for_inference(str(tmp_path / "back"))
  assert b.model.cfg.padded_vocab == a.tokenizer.vocab_size  # vocab_multiple=1 on import.
  ids = np.array([[5, 60, 70, 80, 9]])
  la = np.asarray(a.model.apply({"params": a.params}, ids))[..., :a.tokenizer.vocab_size]
  lb = np.asarray(b.model.apply({"params": b.params}, ids))
  np.testing.assert_allclose(la, lb, atol=1e-5)


def test_generate_cli(workdir):
  env = cpu_env(1)
  cmd = [sys.executable, "-m", "jaxlm.generate", f"--workdir={workdir}", "--prompt=the ",
         "--max_new_tokens=5", "--temperature=0", "--num_samples=2"]
  r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  blocks = r.stdout.split("--- [")[1:]
  assert len(blocks) == 2 and blocks[0] == blocks[1]  # Greedy: both samples agree.
  bad = subprocess.run(cmd[:3] + ["--workdir=/nonexistent", "--max_new_tokens=5"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1 and "not a jaxlm workdir" in bad.stderr
