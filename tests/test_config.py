"""Every recipe loads and builds; bad values fail early with the field named."""

import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

from jaxlm import config as config_lib
from jaxlm import models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))


def load(path, arg=None):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg) if arg else mod.get_config()


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_validates_and_builds(path):
  c = load(path)
  assert c.data.batch_size > 0 and c.data.seq_len > 0
  config_lib.validate(c, num_devices=1)
  if c.model.family == "ngram":  # Count-based: no Flax model to build.
    assert c.ngram.order >= 1
    return
  model = models.build_model(c.model, vocab_size=300, seq_len=c.data.seq_len)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, c.data.seq_len), jnp.int32))
  assert shapes["params"]


@pytest.mark.parametrize("field,value,match", [
    ("data.batch_size", 12, "data.batch_size"),
    ("mesh.shape", (3, 1, 1), "mesh.shape"),
    ("mesh.shape", (2, 2), "mesh.shape"),
    ("model.position", "spiral", "model.position"),
    ("model.num_kv_heads", 3, "model.num_kv_heads"),
    ("optimizer.learning_rate", -1.0, "optimizer.learning_rate"),
    ("optimizer.grad_accum_steps", 3, "optimizer.grad_accum_steps"),
    ("num_train_steps", 0, "num_train_steps"),
    # Issue #17 item 9: each of these crashed inside validate or reached JAX (or was accepted).
    ("model.num_heads", 0, "model.num_heads"),
    ("model.num_heads", -2, "model.num_heads"),
    ("model.emb_dim", 0, "model.emb_dim"),
    ("model.dropout", 1.5, "model.dropout"),
    ("model.attention_dropout", -0.1, "model.attention_dropout"),
    ("model.num_layers", -1, "model.num_layers"),
    ("model.num_kv_heads", -1, "model.num_kv_heads"),
    ("cpu_devices", -1, "cpu_devices"),
])
def test_bad_values_name_the_field(field, value, match):
  c = config_lib.base_config()
  node, leaf = c, field.split(".")
  for p in leaf[:-1]:
    node = node[p]
  node[leaf[-1]] = value
  with pytest.raises(config_lib.ConfigError, match=match) as e:
    config_lib.validate(c, num_devices=8)
  assert "Fix:" in str(e.value)


def test_zero_layers_is_a_transformer_only():
  """0 blocks (a bag of embeddings with mean pooling) is valid for gpt/bert; an LSTM or a
  scanned stack needs a layer."""
  c = config_lib.base_config()
  c.model.num_layers = 0
  config_lib.validate(c, num_devices=1)
  for field, value in (("family", "lstm"), ("scan_layers", True)):
    bad = config_lib.base_config()
    bad.model.num_layers = 0
    bad.model[field] = value
    with pytest.raises(config_lib.ConfigError, match="model.num_layers.*positive"):
      config_lib.validate(bad, num_devices=1)


def test_seq_len_longer_than_position_table():
  c = config_lib.base_config()
  c.model.max_len, c.data.seq_len = 64, 128
  with pytest.raises(config_lib.ConfigError, match="position table"):
    config_lib.validate(c, num_devices=1)


def test_mesh_minus_one_takes_remaining_devices():
  assert config_lib.mesh_shape((-1, 2, 1), 8) == (4, 2, 1)


def test_cli_rejects_bad_cpu_devices_before_any_work(tmp_path):
  """`cpu_devices=-1` is refused with the field and the fix before JAX starts or files appear."""
  from conftest import run_cli
  wd = tmp_path / "w"
  r = run_cli(["--config=configs/default.py:smoke", f"--workdir={wd}", "--config.cpu_devices=-1"])
  assert r.returncode == 1, r.stderr[-2000:]
  assert "config.cpu_devices" in r.stderr and "Fix:" in r.stderr
  assert "Traceback" not in r.stderr
  assert not wd.exists()
