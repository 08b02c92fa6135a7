"""Muon with the Newton-Schulz iterations of same-shaped matrices batched (and split).

`optax.contrib.muon` orthogonalizes each parameter on its own: a Transformer of L layers
runs about 6L chains of five Newton-Schulz iterations of small matmuls, on every device
of a data-parallel mesh. Here the matrices are grouped by shape ([m, n] with m <= n, the
longer side last, as optax transposes them), each group stacked [N, m, n] and iterated as
one batched matmul chain; when a mesh with a `data` axis is set and N divides by its size,
the stack is split over that axis, so each data-parallel device orthogonalizes 1/D of the
matrices and the results are gathered.

Everything else is optax's Muon: Nesterov momentum with bias correction, Frobenius
normalization, the quintic iteration and its coefficients, the width scaling
sqrt(max(1, fan_out / fan_in)), decoupled weight decay, AdamW for the parameters Muon does
not take. The state has optax's layout (`MuonState` under `optax.partition`), and
`tests/test_optim.py` checks the updates equal `optax.contrib.muon`'s.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from optax.contrib import MuonDimensionNumbers, MuonState

Dims = MuonDimensionNumbers


def _is_dims(x) -> bool:
  return isinstance(x, Dims)


def _is_dims_or_none(x) -> bool:  # The leaves of a `dimensions(params)` tree.
  return x is None or _is_dims(x)


def _axes(x: jax.Array, dims: Dims) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(reduction axes, output axes) of `x`, non-negative."""
  as_tuple = lambda a: (a,) if isinstance(a, int) else tuple(a)
  return (tuple(a % x.ndim for a in as_tuple(dims.reduction_axis)),
          tuple(a % x.ndim for a in as_tuple(dims.output_axis)))


def _to_matrices(x: jax.Array, dims: Dims) -> tuple[jax.Array, Callable]:
  """`x` as [batch, m, n] matrices with m <= n (swapped if need be), and the inverse map."""
  red, out = _axes(x, dims)
  batch = tuple(a for a in range(x.ndim) if a not in red + out)
  order = batch + red + out
  shape = lambda axes: tuple(x.shape[a] for a in axes)
  mats = x.transpose(order).reshape(math.prod(shape(batch)), math.prod(shape(red)),
                                    math.prod(shape(out)))
  swap = mats.shape[1] > mats.shape[2]
  inverse_order = tuple(sorted(range(x.ndim), key=lambda i: order[i]))

  def back(m: jax.Array) -> jax.Array:
    m = jnp.swapaxes(m, 1, 2) if swap else m
    return m.reshape(shape(batch) + shape(red) + shape(out)).transpose(inverse_order)

  return (jnp.swapaxes(mats, 1, 2) if swap else mats), back


def _data_mesh(x: jax.Array):
  """The current mesh if it has an automatic `data` axis of size > 1 dividing the stack `x`
  (jaxlm's meshes; under explicit axes the update keeps the arrays' own shardings), else None."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or "data" not in mesh.axis_names or \
      mesh.axis_types[mesh.axis_names.index("data")] != jax.sharding.AxisType.Auto:
    return None
  n = mesh.shape["data"]
  return mesh if n > 1 and x.shape[0] % n == 0 else None


def newton_schulz(x: jax.Array, coeffs: jax.Array, steps: int, eps: float) -> jax.Array:
  """Orthogonalizes each [m, n] matrix (m <= n) of `x` [N, m, n] (optax's quintic iteration)."""
  x = x / (jnp.sqrt(jnp.sum(x * x, axis=(1, 2), keepdims=True)) + eps)
  c = coeffs.astype(x.dtype)
  def step(_, x):
    a = jnp.einsum("bij,bkj->bik", x, x)
    b = c[1] * a + c[2] * jnp.einsum("bij,bjk->bik", a, a)
    return c[0] * x + jnp.einsum("bij,bjk->bik", b, x)

  return jax.lax.fori_loop(0, steps, step, x)


def orthogonalize(tree, dims_tree, coeffs: jax.Array, steps: int, eps: float,
                  split: bool = True):
  """Each leaf of `tree` with a `Dims` in `dims_tree` orthogonalized; same-shaped matrices
  in one stack (split over the mesh's data axis when `split`)."""
  leaves, treedef = jax.tree.flatten(tree)
  dims = treedef.flatten_up_to(dims_tree)
  groups: dict = collections.defaultdict(list)  # (m, n) -> [(leaf index, mats, back)]
  for i, (x, d) in enumerate(zip(leaves, dims, strict=True)):
    if _is_dims(d):
      mats, back = _to_matrices(x, d)
      groups[mats.shape[1:]].append((i, mats, back))
  out = list(leaves)
  for members in groups.values():
    stack = jnp.concatenate([m for _, m, _ in members], axis=0)
    mesh = _data_mesh(stack) if split else None
    if mesh is not None:  # Each device its share, then one all-gather.
      spec = jax.sharding.PartitionSpec
      local = jax.shard_map(lambda x, c: newton_schulz(x, c, steps, eps), mesh=mesh,
                            in_specs=(spec("data"), spec()), out_specs=spec("data"),
                            axis_names={"data"}, check_vma=False)
      stack = jax.lax.with_sharding_constraint(local(stack, coeffs), spec())
    else:
      stack = newton_schulz(stack, coeffs, steps, eps)
    start = 0
    for i, mats, back in members:
      out[i] = back(stack[start:start + mats.shape[0]])
      start += mats.shape[0]
  return jax.tree.unflatten(treedef, out)


def scale_by_muon(dims_fn: Callable, beta: float = 0.95, ns_steps: int = 5, eps: float = 1e-8,
                  split: bool = True) -> optax.GradientTransformation:
  """optax.contrib.scale_by_muon (Nesterov, Frobenius) with batched Newton-Schulz."""
  base = optax.contrib.scale_by_muon(beta=beta, ns_steps=ns_steps, eps=eps)

  def update(updates, state: MuonState, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, beta, 1)
    count = optax.safe_increment(state.count)
    mu_hat = jax.tree.map(lambda m, g: beta * m + (1 - beta) * g,
                          optax.tree.bias_correction(mu, beta, optax.safe_increment(count)),
                          optax.tree.bias_correction(updates, beta, count))
    dims = dims_fn(updates)
    new = orthogonalize(mu_hat, dims, state.ns_coeffs, ns_steps, eps, split)
    return new, MuonState(count=count, mu=mu, ns_coeffs=state.ns_coeffs)

  return optax.GradientTransformation(base.init, update)


def _width_scale(dims_fn: Callable) -> optax.GradientTransformation:
  """Keller Jordan's sqrt(max(1, fan_out / fan_in)) per matrix (optax's scale_by_shape)."""
  def scale(u, d):
    if not _is_dims(d):
      return u
    red, out = _axes(u, d)
    fan_in, fan_out = (math.prod(u.shape[a] for a in axes) for axes in (red, out))
    return u * math.sqrt(max(1.0, fan_out / fan_in))

  def update(updates, state, params=None):
    return jax.tree.map(scale, updates, dims_fn(updates), is_leaf=_is_dims), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def muon(learning_rate, adam_learning_rate, dimensions: Callable, beta: float = 0.95,
         weight_decay: float = 0.0, adam_b1: float = 0.9, adam_b2: float = 0.999,
         eps: float = 1e-8, ns_steps: int = 5, split: bool = True
         ) -> optax.GradientTransformation:
  """optax.contrib.muon's defaults (Nesterov AdamW for the rest, eps_root 0) with
  `dimensions(params)` naming Muon's matrices (None: AdamW) and batched Newton-Schulz."""
  def labels(params):
    return jax.tree.map(lambda d, x: jax.tree.map(lambda _: "adam" if d is None else "muon", x),
                        dimensions(params), params, is_leaf=_is_dims_or_none)

  def masked_dims(params):  # Muon's sub-tree under optax.partition: MaskedNode for AdamW's.
    return jax.tree.map(lambda d: d if _is_dims(d) else optax.MaskedNode(), dimensions(params),
                        is_leaf=_is_dims_or_none)

  return optax.partition(
      {"muon": optax.chain(scale_by_muon(masked_dims, beta, ns_steps, eps, split),
                           _width_scale(masked_dims),
                           optax.add_decayed_weights(weight_decay),
                           optax.scale_by_learning_rate(learning_rate)),
       "adam": optax.adamw(adam_learning_rate, b1=adam_b1, b2=adam_b2, eps=eps, eps_root=0.0,
                           weight_decay=0.0, nesterov=True)},
      labels)
