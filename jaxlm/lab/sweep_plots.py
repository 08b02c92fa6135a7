"""A sweep report's plots: final metric against each swept key, curves, metric vs parameters.

Split from `jaxlm.lab.sweep_report` (tables, collection), which calls `write_plots`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from jaxlm.lab import plots
from jaxlm.lab import sweep_spec as sweep_lib


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def metric_series(sweep: sweep_lib.Sweep, groups: list[dict], key: str) -> dict[str, list]:
  """label -> [(value of `key`, mean, std)]: one series per combination of the other grid
  values (and variants), plus one per extra evaluation length."""
  col = f"final:{sweep.metric}"
  grid = {"variant": list(sweep.variants), **sweep.grid} if sweep.variants else sweep.grid
  others = [k for k in grid if k != key]
  short = {**sweep_lib._short_keys([*sweep.swept, "seed"]), "variant": "variant"}
  # Extra evaluations at other lengths are the same metric: drawn as their own series.
  extra = [f"eval_loss@{n}" for n in sweep.extra_eval_seq_lens] if sweep.metric == "eval_loss" \
      else []
  series: dict[str, list] = {}
  any_early = any(g["status"] != "done" for g in groups)
  for g in groups:
    x = sweep_lib.key_value(g, key)
    label = ", ".join(f"{short[k]}={sweep_lib._fmt(sweep_lib.key_value(g, k))}" for k in others)
    for c in [col, *extra]:
      mean, std = g[c]
      if x is None or math.isnan(mean):
        continue
      at = "training length" if c == col else c[10:] + " tokens"
      early = ("finished" if g["status"] == "done" else "not finished (last eval)") \
          if any_early else ""  # Halving stops runs early: their loss is not comparable.
      name = ", ".join(filter(None, [label, f"evaluated at {at}" if extra else "", early]))
      series.setdefault(name, []).append((x, mean, std))
  return series


def plot_metric_vs_key(sweep: sweep_lib.Sweep, groups: list[dict], key: str,
                       path: str) -> str | None:
  """Final metric (mean ± std over seeds) against one swept key (or the variant), one series
  per `metric_series` label. Numbers on a numeric axis (log for LogUniform), others as
  categories."""
  series = metric_series(sweep, groups, key)
  if not series:
    return None
  grid = {"variant": list(sweep.variants), **sweep.grid}
  values = [p[0] for pts in series.values() for p in pts]
  logx = key in sweep.plot_logx or isinstance(sweep.random.get(key), sweep_lib.LogUniform)
  fig = plots._new_figure((6.5, 4.5), plots.DEFAULT_DPI)
  ax = fig.add_subplot()
  numeric = all(_is_number(v) for v in values)
  categories = list(dict.fromkeys(grid.get(key, [])) or dict.fromkeys(values))
  connect = key in sweep.grid and numeric  # Random draws: a scatter; categories: points.
  for j, (label, pts) in enumerate(series.items()):
    if numeric:
      pts = sorted(pts)
      xs = [float(p[0]) for p in pts]
    else:
      pts = sorted(pts, key=lambda p: categories.index(p[0]))
      offset = (j - (len(series) - 1) / 2) * 0.08
      xs = [categories.index(p[0]) + offset for p in pts]
    ax.errorbar(xs, [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                linestyle="-" if connect else "none", label=label or None)
  if not numeric:
    ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    ax.set_xlim(-0.5, len(categories) - 0.5)
  if logx and numeric:
    ax.set_xscale("log")
  ax.set_xlabel(key)
  ax.set_ylabel(f"final {sweep.metric}")
  ax.grid(True, alpha=0.3, which="both" if logx else "major")
  if any(series):
    ax.legend(fontsize="small")
  return plots._save(fig, path, plots.DEFAULT_DPI)


def plot_curves_and_levels(curves: dict, levels: dict, path: str, title: str, ylabel: str,
                           logx: bool = False) -> str:
  """Curves over steps, plus a dashed level per run without steps (an n-gram's fit)."""
  fig = plots._new_figure((7.0, 4.5), plots.DEFAULT_DPI)
  ax = fig.add_subplot()
  for name, pts in curves.items():
    xs, ys = zip(*sorted(pts), strict=True)
    ax.plot(xs, ys, label=str(name), marker="." if len(pts) < 30 else None)
  for i, (name, y) in enumerate(levels.items()):
    ax.axhline(y, linestyle="--", linewidth=1, color=f"C{(len(curves) + i) % 10}",
               label=f"{name} (no training steps)")
  plots._decorate(ax, title, "step", ylabel, logx, False)
  return plots._save(fig, path, plots.DEFAULT_DPI)


def plot_metric_vs_params(sweep: sweep_lib.Sweep, groups: list[dict], path: str) -> str | None:
  """Final metric against parameter count (log x), one labelled point per setting."""
  col = f"final:{sweep.metric}"
  pts = [(g["params"], *g[col], g["group"]) for g in groups
         if g["params"] and not math.isnan(g[col][0])]
  if len({p[0] for p in pts}) < 2:
    return None
  fig = plots._new_figure((6.5, 4.5), plots.DEFAULT_DPI)
  ax = fig.add_subplot()
  for n, mean, std, label in pts:
    ax.errorbar([n], [mean], yerr=[std], marker="o", capsize=3)
    ax.annotate(label, (n, mean), textcoords="offset points", xytext=(4, 4), fontsize="small")
  plots._decorate(ax, "", "parameters", f"final {sweep.metric}", True, False)
  return plots._save(fig, path, plots.DEFAULT_DPI)


def _trained(curve: list) -> bool:
  """A curve over training steps (n-gram runs have one evaluation at step 0: no curve)."""
  return any(step > 0 for step, _ in curve)


def write_plots(sweep: sweep_lib.Sweep, runs: list[dict], groups: list[dict],
                out: str, prerequisites: Sequence[dict] = ()) -> list[str]:
  curves = {r["name"]: r["curve"] for r in runs if _trained(r["curve"])}
  levels = {r["name"]: r["curve"][-1][1] for r in runs if r["curve"] and not _trained(r["curve"])}
  paths = []
  if curves:
    for logx, name in ((False, "curves.png"), (True, "curves_logx.png")):
      kw = dict(title="validation loss per run", ylabel="eval_loss", logx=logx)
      path = os.path.join(out, name)
      paths.append(plot_curves_and_levels(curves, levels, path, **kw) if levels
                   else plots.plot_curves(curves, path, **kw))
  if sweep.metric != "eval_loss":
    curves = {r["name"]: r["metric_series"] for r in runs if _trained(r["metric_series"])}
    if curves:
      paths.append(plots.plot_curves(curves, os.path.join(out, f"curves_{sweep.metric}.png"),
                                     title=f"{sweep.metric} per run", ylabel=sweep.metric))
  curves = {r["name"]: r["curve"] for r in prerequisites if _trained(r["curve"])}
  if curves:
    paths.append(plots.plot_curves(curves, os.path.join(out, "curves_prerequisites.png"),
                                   title="validation loss of the prerequisite runs",
                                   ylabel="eval_loss"))
  short = {**sweep_lib._short_keys([*sweep.swept, "seed"]), "variant": "variant"}
  for key in sweep_lib.table_keys(sweep):
    p = plot_metric_vs_key(sweep, groups, key,
                           os.path.join(out, f"{sweep.metric}_vs_{short[key]}.png"))
    if p:
      paths.append(p)
  p = plot_metric_vs_params(sweep, groups, os.path.join(out, f"{sweep.metric}_vs_params.png"))
  return paths + ([p] if p else [])
