"""Test helpers: a workdir holding a randomly initialised model, as training leaves one."""

from conftest import tiny_config

from jaxlm import checkpoint, inference, train


def random_workdir(path: str, text_file: str, data_dir: str, **overrides) -> str:
  """config.json, tokenizer.json and a step-0 checkpoint (random params), in seconds."""
  config = tiny_config(text_file, data_dir, **overrides)
  run = train.Run(config, path)
  inference.save_config(config, path)
  ckpt = checkpoint.Checkpointer(path, async_save=False)
  ckpt.save(0, run.init_state(), {}, run.meta())
  ckpt.close()
  return path
