"""Post-training weight-only int8 quantization with per-channel scales.

  python -m jaxlm.quantize --workdir=/tmp/jaxlm      # writes int8/, reports size + perplexity

Each dense/attention kernel and each embedding table becomes int8 values `q`
and a float32 scale per output channel (symmetric: w ~ q * scale, scale =
max|w| / 127 over the input axes); norms and biases stay float. Embedding tables
get one scale per row, which is the output channel of the tied logits too.
`dequantize` runs inside the jitted programs (the generator does this), so the
weights stay int8 in memory and on disk.
"""

from __future__ import annotations

import json
import os
import sys
import time

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import evaluation, inference
from jaxlm.run import Run

# Axes (counted from the end) that are reduced to one scale, by parameter role.
# Attention q/k/v kernels are [D, H, E] (fused: [D, 3, H, E]), the output [H, E, D],
# dense [in, out], tables [rows, D]. A leading axis (scanned layers) is kept, so each layer
# has its scales.
_REDUCE = {"query": (-3,), "key": (-3,), "value": (-3,), "qkv": (-4,), "out": (-3, -2)}
_DENSE = (-2,)
_TABLE = (-1,)
SAFETENSORS_FILE = "model.safetensors"


@flax.struct.dataclass
class QArray:
  """int8 values and a broadcastable float32 scale; `dtype` is the original dtype."""

  q: jax.Array
  scale: jax.Array
  dtype: str = flax.struct.field(pytree_node=False, default="float32")

  def dequantize(self) -> jax.Array:
    return (self.q.astype(jnp.float32) * self.scale).astype(self.dtype)

  @property
  def shape(self):
    return self.q.shape


def _reduce_axes(path: tuple[str, ...], x) -> tuple[int, ...] | None:
  name, parent = path[-1], path[-2] if len(path) > 1 else ""
  if name in ("embedding", "pos_embedding") and x.ndim >= 2:
    return _TABLE
  if name == "kernel" and x.ndim >= 2:
    return _REDUCE.get(parent, _DENSE)
  return None


def quantize_array(x, axes: tuple[int, ...]) -> QArray:
  x32 = jnp.asarray(x, jnp.float32)
  amax = jnp.max(jnp.abs(x32), axis=axes, keepdims=True)
  scale = jnp.where(amax > 0, amax / 127.0, 1.0)
  q = jnp.clip(jnp.round(x32 / scale), -127, 127).astype(jnp.int8)
  return QArray(q, scale, jnp.dtype(x.dtype).name)


def quantize_params(params):
  """Params with every kernel/embedding leaf replaced by a `QArray`."""
  def one(path, x):
    names = tuple(getattr(k, "key", str(k)) for k in path)
    axes = _reduce_axes(names, x)
    return x if axes is None else quantize_array(x, axes)
  return jax.tree_util.tree_map_with_path(one, params)


def dequantize(params):
  """Float params again (a no-op on trees without `QArray`s)."""
  return jax.tree.map(lambda x: x.dequantize() if isinstance(x, QArray) else x, params,
                      is_leaf=lambda x: isinstance(x, QArray))


# ----------------------------------------------------------------------------- files


def flatten(params) -> dict[str, np.ndarray]:
  """{'a/b/kernel': array}; a QArray leaf gives 'a/b/kernel.int8' and 'a/b/kernel.scale'."""
  out = {}
  leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, QArray))[0]
  for path, x in leaves:
    name = "/".join(getattr(k, "key", str(k)) for k in path)
    if isinstance(x, QArray):
      out[name + ".int8"] = np.asarray(x.q)
      out[name + ".scale"] = np.asarray(x.scale)
    else:
      out[name] = np.asarray(jax.device_get(x))
  return out


def unflatten(flat: dict[str, np.ndarray], dtype: str = "float32") -> dict:
  tree: dict = {}
  for name, value in flat.items():
    if name.endswith(".scale"):
      continue
    leaf = value
    if name.endswith(".int8"):
      name = name[:-5]
      leaf = QArray(jnp.asarray(value), jnp.asarray(flat[name + ".scale"]), dtype)
    node = tree
    *parents, last = name.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = leaf if isinstance(leaf, QArray) else jnp.asarray(leaf)
  return tree


def save(params, path: str) -> int:
  """Writes params (float or quantized) as safetensors; returns the file size in bytes."""
  from safetensors.numpy import save_file
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  save_file(flatten(params), path, metadata={"format": "jaxlm"})
  return os.path.getsize(path)


def load(path: str) -> dict:
  from safetensors.numpy import load_file
  return unflatten(load_file(path))


# ----------------------------------------------------------------------------- report


def report(workdir: str, out_dir: str | None = None, eval_batches: int = -1) -> dict:
  """Quantizes `workdir`'s latest params, saves them, compares size and eval perplexity."""
  m = inference.load_for_inference(workdir)
  out_dir = out_dir or os.path.join(workdir, "int8")
  qparams = quantize_params(m.params)
  int8_bytes = save(qparams, os.path.join(out_dir, SAFETENSORS_FILE))
  fp_bytes = save(m.params, os.path.join(out_dir, "float_params.safetensors"))
  os.remove(os.path.join(out_dir, "float_params.safetensors"))
  run = Run(m.config, workdir)
  eval_fn = run.jit_eval_step()
  put = lambda p: jax.device_put(p, run.state_shardings.params)
  t = time.time()
  ev_float = evaluation.evaluate(run, put(m.params), eval_fn, max_batches=eval_batches)
  ev_int8 = evaluation.evaluate(run, put(jax.jit(dequantize)(qparams)), eval_fn,
                                max_batches=eval_batches)
  rep = {
      "workdir": os.path.abspath(workdir), "step": m.step, "split": m.config.data.eval_split,
      "eval_tokens": ev_float["tokens"], "float_bytes": fp_bytes, "int8_bytes": int8_bytes,
      "size_ratio": int8_bytes / fp_bytes,
      "float": {k: ev_float[k] for k in ("loss", "ppl", "bpb")},
      "int8": {k: ev_int8[k] for k in ("loss", "ppl", "bpb")},
      "ppl_change_pct": 100 * (ev_int8["ppl"] / ev_float["ppl"] - 1),
      "eval_seconds": time.time() - t,
  }
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(rep, f, indent=1)
  return rep


def main(argv=None) -> int:
  from absl import flags
  f = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "Trained run's workdir.", flag_values=f)
  flags.DEFINE_string("out", None, "Output dir (default: WORKDIR/int8).", flag_values=f)
  flags.DEFINE_integer("eval_batches", -1, "Eval batches; -1 = the whole split.", flag_values=f)
  f(argv if argv is not None else sys.argv)
  if not f.workdir:
    print("error: --workdir is required.", file=sys.stderr)
    return 2
  rep = report(f.workdir, f.out, f.eval_batches)
  print(json.dumps(rep, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
