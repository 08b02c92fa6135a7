"""The family recipes and their variants load, validate and build."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import pytest

from jaxlm import config as config_lib
from jaxlm import models
from jaxlm.recipes import apply_variants

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(family, arg):
  path = os.path.join(REPO, "configs", f"{family}.py")
  spec = importlib.util.spec_from_file_location(family, path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


@pytest.mark.parametrize("family", ["gpt", "bert", "lstm", "ngram"])
@pytest.mark.parametrize("arg", [None, "smoke", "wikitext2", "smoke,wikitext2"])
def test_family_recipe_variants(family, arg, monkeypatch):
  monkeypatch.setenv("JAXLM_SHARED_DATA", "/data/shared")
  c = load(family, arg)
  assert c.model.family == family
  config_lib.validate(c, num_devices=1)
  if arg and "wikitext2" in arg:
    assert c.data.path == "/data/shared/wikitext-2/valid.txt" and c.data.tokenizer == "word"
  if arg and "smoke" in arg:
    assert c.num_train_steps <= 20 and c.data.seq_len == 32
  if family == "ngram":
    assert c.ngram.order >= 3
    return
  model = models.build_model(c.model, vocab_size=300, seq_len=c.data.seq_len)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  assert shapes["params"]


def test_unknown_variant_fails():
  with pytest.raises(ValueError, match="Unknown recipe variant 'smok'"):
    apply_variants(config_lib.base_config(), "smok")
