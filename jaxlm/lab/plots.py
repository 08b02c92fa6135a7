"""Pictures for reports: loss curves, sweeps, attention maps, per-token losses.

Every function draws on its own `matplotlib.figure.Figure` rendered by the Agg
canvas and writes a PNG, returning the path. Nothing goes through pyplot's
global figure list, so there is nothing to close or leak in long sweeps, and
no display is needed. The Agg backend is also selected at import for code that
uses pyplot afterwards on a headless machine, unless pyplot was already
imported: switching then would close the caller's open figures.

Image size is exactly `figsize * dpi` pixels (no tight bounding box; layouts
are constrained instead), so reports can rely on it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np

if "matplotlib.pyplot" not in sys.modules:
  matplotlib.use("Agg")

from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

DEFAULT_DPI = 100
# Shown in place of whitespace / control characters so every token is visible.
_VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u2192", "\r": "\\r"}

Point = tuple[float, float]
ErrorPoint = tuple[float, float, float]


def _new_figure(figsize: tuple[float, float], dpi: int) -> Figure:
  fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> str:
  path = os.fspath(path)
  parent = os.path.dirname(path)
  if parent:
    os.makedirs(parent, exist_ok=True)
  fig.savefig(path, format="png", dpi=dpi)
  return path


def display_token(token: str) -> str:
  """A token as a readable label: whitespace and control characters made visible."""
  out = []
  for ch in str(token):
    if ch in _VISIBLE:
      out.append(_VISIBLE[ch])
    elif ord(ch) < 32 or ord(ch) == 127:
      out.append(f"\\x{ord(ch):02x}")
    else:
      out.append(ch)
  return "".join(out) if out else "\u2205"  # empty token: show the empty-set sign


# ----------------------------------------------------------------------------
# Curves and sweeps
# ----------------------------------------------------------------------------


def plot_curves(
    curves: Mapping[str, Sequence[Point]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "step",
    ylabel: str = "loss",
    logx: bool = False,
    logy: bool = False,
    figsize: tuple[float, float] = (7.0, 4.5),
    dpi: int = DEFAULT_DPI,
) -> str:
  """One line per run, e.g. validation loss against step for several runs."""
  fig = _new_figure(figsize, dpi)
  ax = fig.add_subplot()
  for name, points in curves.items():
    pts = sorted((float(x), float(y)) for x, y in points)
    if not pts:
      continue
    xs, ys = zip(*pts, strict=True)
    ax.plot(xs, ys, label=str(name), marker="." if len(pts) < 30 else None)
  _decorate(ax, title, xlabel, ylabel, logx, logy)
  return _save(fig, path, dpi)


def plot_metric_vs_param(
    points: Mapping[str, Sequence[ErrorPoint]] | Sequence[ErrorPoint],
    path: str | os.PathLike,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    title: str = "",
    logy: bool = False,
    figsize: tuple[float, float] = (6.0, 4.5),
    dpi: int = DEFAULT_DPI,
) -> str:
  """A metric (mean +- std over seeds) against a swept hyperparameter.

  `points` is a list of (x, mean, std) for one series, or a dict of such
  lists, one series per name (e.g. per model size).
  """
  series = points if isinstance(points, Mapping) else {"": points}
  fig = _new_figure(figsize, dpi)
  ax = fig.add_subplot()
  for name, pts in series.items():
    rows = sorted(tuple(float(v) for v in p) for p in pts)
    if not rows:
      continue
    x, mean, std = (np.array(c) for c in zip(*rows, strict=True))
    ax.errorbar(x, mean, yerr=std, label=str(name) or None, marker="o", capsize=3)
  _decorate(ax, title, xlabel, ylabel, logx, logy)
  return _save(fig, path, dpi)


def _decorate(ax: Any, title: str, xlabel: str, ylabel: str, logx: bool, logy: bool) -> None:
  if logx:
    ax.set_xscale("log")
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(True, which="both" if (logx or logy) else "major", alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize="small")


# ----------------------------------------------------------------------------
# Attention and per-token losses
# ----------------------------------------------------------------------------


def attention_figsize(num_heads: int, num_queries: int, num_keys: int) -> tuple[float, float]:
  """Default figure size for `plot_attention`: panels grow with sequence length."""
  ncols, nrows = _grid(num_heads)
  t = max(num_queries, num_keys)
  panel = min(max(0.11 * t + 1.6, 3.0), 9.0)
  return (ncols * panel, nrows * panel)


def _grid(n: int) -> tuple[int, int]:
  ncols = math.ceil(math.sqrt(n))
  return ncols, math.ceil(n / ncols)


def plot_attention(
    weights: Any,
    tokens: Sequence[str],
    path: str | os.PathLike,
    title: str = "",
    key_tokens: Sequence[str] | None = None,
    head_names: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> str:
  """Attention heatmaps, one panel per head: query rows, key columns.

  `weights` is [H, Tq, Tk] or [Tq, Tk] (a jax array is fine). `tokens` label
  the queries and, unless `key_tokens` is given (cross-attention), the keys.
  Each panel uses the same 0..max colour scale so heads can be compared.
  """
  w = np.asarray(weights, dtype=np.float32)
  if w.ndim == 2:
    w = w[None]
  if w.ndim != 3:
    raise ValueError(f"weights must be [H, T, T] or [T, T], got shape {w.shape}")
  h, tq, tk = w.shape
  key_tokens = tokens if key_tokens is None else key_tokens
  if len(tokens) != tq or len(key_tokens) != tk:
    raise ValueError(
        f"{len(tokens)} query / {len(key_tokens)} key tokens for weights of shape {w.shape}"
    )
  if head_names is None:
    head_names = [f"head {i}" for i in range(h)] if h > 1 else [""]
  figsize = figsize or attention_figsize(h, tq, tk)
  t = max(tq, tk)
  fontsize = 8 if t <= 24 else (6 if t <= 48 else 5)
  qlabels = [display_token(s) for s in tokens]
  klabels = [display_token(s) for s in key_tokens]
  vmax = float(np.nanmax(w)) if np.isfinite(w).any() else 1.0
  vmax = vmax if vmax > 0 else 1.0

  fig = _new_figure(figsize, dpi)
  ncols, nrows = _grid(h)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  image = None
  for i, ax in enumerate(axes.flat):
    if i >= h:
      ax.set_axis_off()
      continue
    image = ax.imshow(w[i], cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto",
                      interpolation="nearest")
    ax.set_xticks(range(tk), klabels, rotation=90, fontsize=fontsize, parse_math=False)
    ax.set_yticks(range(tq), qlabels, fontsize=fontsize, parse_math=False)
    ax.tick_params(length=0)
    if head_names[i]:
      ax.set_title(str(head_names[i]), fontsize=9)
  if image is not None:
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
  if title:
    fig.suptitle(title)
  return _save(fig, path, dpi)


def plot_token_losses(
    tokens: Sequence[str],
    losses: Any,
    path: str | os.PathLike,
    title: str = "",
    line_chars: int = 80,
    cmap: str = "Reds",
    vmax: float | None = None,
    figsize: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> str:
  """Tokens as boxes coloured by their loss, wrapped into lines, with a colorbar.

  Shows where a model is surprised. Box width follows the token's length (a
  monospace font), lines wrap at `line_chars` characters. NaN losses (e.g.
  unscored positions) are drawn grey. `vmax` fixes the colour scale so several
  pictures can be compared; by default it is the largest finite loss.
  """
  loss = np.asarray(losses, dtype=np.float64).reshape(-1)
  if len(tokens) != loss.size:
    raise ValueError(f"{len(tokens)} tokens but {loss.size} losses")
  labels = [display_token(s) for s in tokens]

  # Lay tokens out in rows of at most `line_chars` character cells.
  placed: list[tuple[int, float, float]] = []  # (row, x, width)
  row, x = 0, 0.0
  for lab in labels:
    width = max(len(lab), 1) + 0.6
    if x > 0 and x + width > line_chars:
      row, x = row + 1, 0.0
    placed.append((row, x, width))
    x += width
  nrows = row + 1
  xmax = max([float(line_chars)] + [x0 + w for _, x0, w in placed])
  if figsize is None:
    figsize = (max(4.0, 0.075 * line_chars + 0.6), 0.32 * nrows + 1.4)
  # Fill each character cell: a monospace glyph is about 0.6 em wide.
  fontsize = float(np.clip(figsize[0] * 0.95 / xmax * 72 / 0.66, 4.0, 11.0))

  finite = loss[np.isfinite(loss)]
  top = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
  norm = mcolors.Normalize(vmin=0.0, vmax=top if top > 0 else 1.0)
  colormap = matplotlib.colormaps[cmap]

  fig = _new_figure(figsize, dpi)
  ax = fig.add_subplot()
  for (r, x0, width), lab, value in zip(placed, labels, loss, strict=True):
    if np.isfinite(value):
      face = colormap(norm(value))
      dark = (0.299 * face[0] + 0.587 * face[1] + 0.114 * face[2]) < 0.5
    else:
      face, dark = (0.85, 0.85, 0.85, 1.0), False
    ax.add_patch(Rectangle((x0, -r - 0.9), width - 0.1, 0.8, facecolor=face,
                           edgecolor="0.6", linewidth=0.3))
    ax.text(x0 + (width - 0.1) / 2, -r - 0.5, lab, ha="center", va="center",
            family="monospace", fontsize=fontsize, color="white" if dark else "black",
            parse_math=False)
  ax.set_xlim(-0.2, xmax)
  ax.set_ylim(-nrows - 0.1, 0.0)
  ax.set_axis_off()
  fig.colorbar(ScalarMappable(norm=norm, cmap=colormap), ax=ax, orientation="horizontal",
               label="loss (nats)", fraction=0.08 if nrows > 4 else 0.25, aspect=40)
  if title:
    ax.set_title(title)
  return _save(fig, path, dpi)


# ----------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------


def pca_2d(x: Any) -> np.ndarray:
  """Projection of rows of x [N, D] on the top two principal components, [N, 2].

  Centred, via SVD (no scikit-learn). Signs are fixed so each component's
  largest-magnitude loading is positive: the same input gives the same
  picture. With D < 2 or rank < 2 the missing columns are zero.
  """
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 2:
    raise ValueError(f"expected [N, D], got shape {x.shape}")
  n, d = x.shape
  out = np.zeros((n, 2))
  if n == 0 or d == 0:
    return out
  xc = x - x.mean(axis=0, keepdims=True)
  _, _, vt = np.linalg.svd(xc, full_matrices=False)
  k = min(2, vt.shape[0])
  comps = vt[:k]
  signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
  comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
  out[:, :k] = xc @ comps.T
  return out


def plot_embeddings_2d(
    points: Any,
    labels: Sequence[str] | None,
    path: str | os.PathLike,
    title: str = "",
    figsize: tuple[float, float] = (7.0, 7.0),
    dpi: int = DEFAULT_DPI,
) -> str:
  """Scatter of 2-D points (e.g. `pca_2d` of token embeddings) with text labels."""
  p = np.asarray(points, dtype=np.float64)
  if p.ndim != 2 or p.shape[1] != 2:
    raise ValueError(f"points must be [N, 2], got shape {p.shape}")
  if labels is not None and len(labels) != p.shape[0]:
    raise ValueError(f"{len(labels)} labels for {p.shape[0]} points")
  fig = _new_figure(figsize, dpi)
  ax = fig.add_subplot()
  ax.scatter(p[:, 0], p[:, 1], s=12, alpha=0.7)
  if labels is not None:
    fontsize = 8 if p.shape[0] <= 100 else 6
    for (x, y), lab in zip(p, labels, strict=True):
      ax.annotate(display_token(lab), (x, y), xytext=(3, 3), textcoords="offset points",
                  fontsize=fontsize, parse_math=False)
  ax.grid(True, alpha=0.3)
  if title:
    ax.set_title(title)
  return _save(fig, path, dpi)


# ----------------------------------------------------------------------------
# Metric logs
# ----------------------------------------------------------------------------


def read_metrics_jsonl(path: str | os.PathLike) -> list[dict]:
  """Rows of a metrics JSONL file, in file order; blank lines are skipped.

  A malformed *last* line is dropped with a warning (a run killed mid-write);
  a malformed line elsewhere is an error.
  """
  with open(path, encoding="utf-8") as f:
    lines = [(i, line) for i, line in enumerate(f, start=1) if line.strip()]
  rows = []
  for k, (lineno, line) in enumerate(lines):
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if k == len(lines) - 1:
        warnings.warn(f"{path}:{lineno}: dropping truncated last line ({e})", stacklevel=2)
        break
      raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from e
    if not isinstance(row, dict):
      raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
    rows.append(row)
  return rows


def curves_from_metrics(rows: Iterable[Mapping[str, Any]], key: str = "eval_loss") -> list[Point]:
  """(step, value) pairs for one metric, sorted by step.

  Rows without `step` or without a numeric `key` are skipped. A step logged
  more than once (a run resumed from an earlier checkpoint) keeps its last row.
  """
  by_step: dict[float, float] = {}
  for row in rows:
    step, value = row.get("step"), row.get(key)
    if step is None or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    by_step[step] = float(value)  # A later row for the same step replaces it.
  return sorted(by_step.items())
