"""Ahead-of-time compile check: will this config fit on that mesh, before renting it?

`compile_for_mesh` lowers and compiles the real train step (same `Run`,
shardings, donation) for abstract inputs, so no parameter is allocated and
nothing runs, and reads XLA's memory plan per device. On a CPU host the mesh is
made of fake devices (`--xla_force_host_platform_device_count`), which must be
set before JAX starts: `run_aot` re-runs the benchmark in a subprocess when this
process has too few devices.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from jaxlm import config as config_lib
from jaxlm import train


class _FixedVocab:
  """Stands in for a tokenizer: AOT needs only the vocabulary size."""

  kind = "fixed"

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size

  def token_bytes(self) -> np.ndarray:
    return np.ones(self.vocab_size, np.int32)

  def identity(self) -> dict:
    return {"kind": self.kind, "vocab_size": self.vocab_size}


class AbstractRun(train.Run):
  """A `Run` whose vocabulary is given, so no data or tokenizer is touched."""

  def __init__(self, config, vocab_size: int, devices=None):
    self._vocab_size = vocab_size
    super().__init__(config, None, devices)

  def _tokenizer(self):
    return _FixedVocab(self._vocab_size)


def parse_mesh(mesh: str) -> tuple[int, int, int]:
  try:
    shape = tuple(int(s) for s in mesh.split(","))
  except ValueError:
    shape = ()
  if len(shape) != len(config_lib.MESH_AXES) or min(shape) < 1:
    raise config_lib.ConfigError(
        f"--mesh={mesh!r} is not a mesh shape. Fix: give three positive sizes "
        f"{config_lib.MESH_AXES}, e.g. --mesh=256,1,1 or --mesh=16,16,1.")
  return shape  # type: ignore[return-value]


def compile_for_mesh(config, vocab_size: int, devices=None) -> dict:
  """Lowers + compiles one train step for `config.mesh.shape` over `devices`; memory per device."""
  import flax.linen as nn

  from jaxlm.lab.benchmark import compiled_memory, xla_flops

  t0 = time.perf_counter()
  run = AbstractRun(config, vocab_size, devices)
  d = config.data
  batch = {k: jax.ShapeDtypeStruct((d.batch_size, d.seq_len + 1), np.int32,
                                   sharding=run.batch_sharding)
           for k in ("tokens", "segment_ids", "positions")}
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    lowered = run.jit_train_step().lower(run.abstract_state, batch)
    lower_s = time.perf_counter() - t0
    compiled = lowered.compile()
  compile_s = time.perf_counter() - t0 - lower_s
  mem = compiled_memory(compiled)
  state_bytes = sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                    for x in jax.tree.leaves(run.abstract_state))
  return {
      "mode": "aot", "mesh": dict(run.mesh.shape), "devices": run.mesh.size,
      "params": run.num_params, "vocab_size": vocab_size,
      "padded_vocab": run.model.cfg.padded_vocab, "batch_size": d.batch_size,
      "seq_len": d.seq_len, "dtype": config.model.dtype, "remat": config.model.remat,
      "scan_layers": config.model.scan_layers, "lower_s": lower_s, "compile_s": compile_s,
      "memory_per_device_bytes": mem, "state_bytes_per_device": int(state_bytes),
      "memory_per_device_gib": mem.get("total", 0) / 2 ** 30,
      "flops_per_token": run.flops_per_token, "xla_flops_per_device_step": xla_flops(compiled),
  }


def run_aot(config, mesh: str, vocab_size: int, argv: list[str]) -> dict:
  """`compile_for_mesh` here if this process has the devices, else in a child that does."""
  shape = parse_mesh(mesh) if mesh else tuple(config.mesh.shape)
  n = math.prod(shape) if min(shape) > 0 else jax.device_count()
  if jax.device_count() >= n:
    config.mesh.shape = shape
    return compile_for_mesh(config, vocab_size, jax.devices()[:n])
  if os.environ.get("JAXLM_AOT_CHILD"):
    raise RuntimeError(f"Asked for {n} fake devices but JAX has {jax.device_count()}.")
  env = dict(os.environ, JAXLM_AOT_CHILD="1", JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                       f"--xla_force_host_platform_device_count={n}")
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "aot.json")
    proc = subprocess.run([sys.executable, "-m", "jaxlm.lab.bench", *argv, f"--out={out}"],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
      raise RuntimeError(f"AOT compile on {n} fake devices failed:\n{proc.stderr[-4000:]}")
    with open(out) as f:
      result = json.load(f)
  for k in ("environment", "command"):
    result.pop(k, None)
  result["fake_cpu_devices"] = True
  return result
