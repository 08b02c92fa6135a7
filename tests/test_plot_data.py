"""The plotted data, read back from the figure each plot function saved (issue 14 item 8).

`tests/test_plots.py` checks the PNG files; here every plot function's figure is
captured at `plots._save` (the one place figures are written) and its lines,
error bars, images, patches, axis limits and labels are compared with the input.
Each check also runs on deliberately wrong data and must fail (negative control).
"""

from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

from jaxlm.lab import plots, sweep_plots


@pytest.fixture
def saved(monkeypatch):
  """The figures written by plot functions, in order."""
  figs = []
  real_save = plots._save

  def capture(fig, path, dpi):
    figs.append(fig)
    return real_save(fig, path, dpi)

  monkeypatch.setattr(plots, "_save", capture)
  return figs


def data_axes(fig):
  """The figure's axes that hold data (colorbars excluded)."""
  return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def check_lines(ax, expected: dict) -> None:
  """ax's labelled lines are exactly `expected` (label -> sorted (x, y) points)."""
  got = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
  assert set(got) == set(expected), (set(got), set(expected))
  for label, pts in expected.items():
    xs, ys = zip(*pts, strict=True)
    np.testing.assert_allclose(got[label].get_xdata(), xs)
    np.testing.assert_allclose(got[label].get_ydata(), ys)


def check_errorbars(ax, expected: dict) -> None:
  """ax's error-bar series are `expected` (label -> sorted (x, mean, std))."""
  got = {c.get_label(): c for c in ax.containers}
  assert set(got) == set(expected), (set(got), set(expected))
  for label, rows in expected.items():
    x, mean, std = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    line, _, (bars,) = got[label].lines
    np.testing.assert_allclose(np.asarray(line.get_xdata(), dtype=float), x)
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), mean)
    segs = np.array(bars.get_segments())  # [N, 2 ends, (x, y)]
    np.testing.assert_allclose(segs[:, 0, 1], mean - std)
    np.testing.assert_allclose(segs[:, 1, 1], mean + std)


CURVES = {
    "run-a": [(0, 3.0), (100, 2.5), (200, 2.2)],
    "run-b": [(200, 2.4), (0, 3.1), (100, 2.7)],  # Unsorted input: drawn sorted.
}


def test_plot_curves_data(saved, tmp_path):
  plots.plot_curves(CURVES, tmp_path / "c.png", title="val", ylabel="eval_loss", logy=True)
  (ax,) = data_axes(saved[-1])
  expected = {k: sorted(v) for k, v in CURVES.items()}
  check_lines(ax, expected)
  assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("val", "step", "eval_loss")
  assert (ax.get_xscale(), ax.get_yscale()) == ("linear", "log")
  lo, hi = ax.get_xlim()
  assert lo <= 0 and hi >= 200 and hi < 300  # Every point visible, no wasted range.
  lo, hi = ax.get_ylim()
  assert lo <= 2.2 and hi >= 3.1 and lo > 1.5 and hi < 4
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["run-a", "run-b"]
  # Negative controls: a swapped point, a missing run.
  wrong = {**expected, "run-a": [(0, 3.0), (100, 2.2), (200, 2.5)]}
  with pytest.raises(AssertionError):
    check_lines(ax, wrong)
  with pytest.raises(AssertionError):
    check_lines(ax, {"run-a": expected["run-a"]})


def test_plot_metric_vs_param_data(saved, tmp_path):
  pts = [(1e-3, 2.6, 0.2), (1e-4, 2.5, 0.1), (3e-4, 2.3, 0.05)]
  plots.plot_metric_vs_param(pts, tmp_path / "one.png", "lr", "val loss", logx=True)
  (ax,) = data_axes(saved[-1])
  check_errorbars(ax, {"_container0": sorted(pts)})  # Unnamed: matplotlib's default label.
  assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale()) == ("lr", "val loss", "log")
  assert ax.get_legend() is None  # One unnamed series: no legend.
  big = [(x, m - 0.3, s) for x, m, s in pts]
  plots.plot_metric_vs_param({"small": pts, "big": big}, tmp_path / "two.png", "lr", "loss")
  (ax,) = data_axes(saved[-1])
  check_errorbars(ax, {"small": sorted(pts), "big": sorted(big)})
  assert ax.get_xscale() == "linear"
  # Negative controls: the series swapped, a std doubled.
  with pytest.raises(AssertionError):
    check_errorbars(ax, {"small": sorted(big), "big": sorted(pts)})
  with pytest.raises(AssertionError):
    check_errorbars(ax, {"small": [(x, m, 2 * s) for x, m, s in sorted(pts)],
                         "big": sorted(big)})


def test_plot_attention_data(saved, tmp_path):
  rng = np.random.default_rng(0)
  w = rng.dirichlet(np.ones(6), size=(3, 6)).astype(np.float32)  # [H=3, 6, 6]
  tokens = [" the", "$", "\n", "x_1", "", "cat"]
  plots.plot_attention(w, tokens, tmp_path / "a.png", title="layer 0")
  fig = saved[-1]
  axes = data_axes(fig)
  assert len(axes) == 4 and not axes[3].axison  # 2x2 grid, the 4th panel off.
  assert fig._suptitle.get_text() == "layer 0"
  labels = ["\u2423the", "$", "\u21b5", "x_1", "\u2205", "cat"]

  def check(ax, panel, title):
    (image,) = ax.images
    np.testing.assert_array_equal(image.get_array(), panel)
    assert image.get_clim() == (0.0, pytest.approx(float(w.max())))  # One scale for all.
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert ax.get_title() == title

  for i in range(3):
    check(axes[i], w[i], f"head {i}")
  with pytest.raises(AssertionError):  # Negative control: heads swapped.
    check(axes[0], w[1], "head 0")
  with pytest.raises(AssertionError):  # Transposed (keys on rows).
    check(axes[0], w[0].T, "head 0")


def test_plot_token_losses_data(saved, tmp_path):
  tokens = ["Hello", ",", " world", "!", "\n"]
  losses = np.array([0.0, 1.0, np.nan, 4.0, 2.0])
  plots.plot_token_losses(tokens, losses, tmp_path / "t.png", title="surprise")
  (ax,) = data_axes(saved[-1])
  assert ax.get_title() == "surprise"

  def check(ax, expected_losses):
    reds = matplotlib.colormaps["Reds"]
    faces = [p.get_facecolor() for p in ax.patches]
    assert len(faces) == len(expected_losses)
    for face, value in zip(faces, expected_losses, strict=True):
      want = (0.85, 0.85, 0.85, 1.0) if np.isnan(value) else reds(value / 4.0)
      np.testing.assert_allclose(face, want, atol=1e-6)

  check(ax, losses)
  assert [t.get_text() for t in ax.texts] == ["Hello", ",", "\u2423world", "!", "\u21b5"]
  # One row of 80 character cells: boxes laid left to right, inside the limits.
  xs = [p.get_x() for p in ax.patches]
  assert xs == sorted(xs) and xs[0] == 0.0
  assert ax.get_xlim() == (-0.2, 80.0) and ax.get_ylim() == (-1.1, 0.0)
  cbar = [a for a in saved[-1].axes if a.get_label() == "<colorbar>"]
  assert len(cbar) == 1 and cbar[0].get_xlim() == (0.0, 4.0)  # vmax: the largest loss.
  with pytest.raises(AssertionError):  # Negative control: losses reversed.
    check(ax, losses[::-1])


def test_plot_embeddings_2d_data(saved, tmp_path):
  rng = np.random.default_rng(1)
  pts = plots.pca_2d(rng.normal(size=(10, 8)))
  labels = [f"w{i}" for i in range(9)] + ["$x$"]
  plots.plot_embeddings_2d(pts, labels, tmp_path / "e.png", title="emb")
  (ax,) = data_axes(saved[-1])
  (scatter,) = ax.collections

  def check(ax, points, labels):
    np.testing.assert_allclose(ax.collections[0].get_offsets(), points)
    assert [t.get_text() for t in ax.texts] == labels
    np.testing.assert_allclose([t.xy for t in ax.texts], points)

  check(ax, pts, labels)
  assert ax.get_title() == "emb"
  (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
  assert x0 <= pts[:, 0].min() and x1 >= pts[:, 0].max()
  assert y0 <= pts[:, 1].min() and y1 >= pts[:, 1].max()
  with pytest.raises(AssertionError):  # Negative control: x and y swapped.
    check(ax, pts[:, ::-1], labels)


def test_sweep_plot_curves_and_levels_data(saved, tmp_path):
  sweep_plots.plot_curves_and_levels(CURVES, {"kn-4gram": 2.05}, str(tmp_path / "c.png"),
                                     "validation loss per run", "eval_loss")
  (ax,) = data_axes(saved[-1])
  level = [ln for ln in ax.get_lines() if ln.get_label() == "kn-4gram (no training steps)"]
  expected = {k: sorted(v) for k, v in CURVES.items()}
  expected["kn-4gram (no training steps)"] = list(zip(level[0].get_xdata(), [2.05, 2.05],
                                                      strict=True))
  check_lines(ax, expected)
  assert ax.get_ylim()[0] < 2.05  # The level is inside the view.
  assert (ax.get_title(), ax.get_ylabel()) == ("validation loss per run", "eval_loss")
  with pytest.raises(AssertionError):  # Negative control: the level at the wrong height.
    check_lines(ax, {**expected, "kn-4gram (no training steps)": [(0, 2.5), (1, 2.5)]})


def test_sweep_plot_metric_vs_params_data(saved, tmp_path):
  sweep = SimpleNamespace(metric="eval_loss")
  groups = [
      {"group": "small", "params": 1e5, "final:eval_loss": (2.6, 0.1)},
      {"group": "big", "params": 1e6, "final:eval_loss": (2.2, 0.05)},
      {"group": "failed", "params": 3e6, "final:eval_loss": (float("nan"), 0.0)},
  ]
  sweep_plots.plot_metric_vs_params(sweep, groups, str(tmp_path / "p.png"))
  (ax,) = data_axes(saved[-1])

  def check(ax, rows):
    got = [(c.lines[0].get_xdata()[0], c.lines[0].get_ydata()[0]) for c in ax.containers]
    assert got == [(n, m) for n, m, _ in rows]
    assert [t.get_text() for t in ax.texts] == [label for *_, label in rows]

  check(ax, [(1e5, 2.6, "small"), (1e6, 2.2, "big")])  # The NaN group is left out.
  assert (ax.get_xscale(), ax.get_xlabel(), ax.get_ylabel()) == (
      "log", "parameters", "final eval_loss")
  with pytest.raises(AssertionError):  # Negative control: the labels swapped.
    check(ax, [(1e5, 2.6, "big"), (1e6, 2.2, "small")])
  assert sweep_plots.plot_metric_vs_params(sweep, groups[:1], str(tmp_path / "q.png")) is None


def test_sweep_plot_metric_vs_key_data(saved, tmp_path):
  from jaxlm.lab import sweep_spec as sw
  s = sw.Sweep(variants={"a": {"config": "c.py"}, "b": {"config": "c.py"}},
               grid={"model.emb_dim": [32, 64]})
  groups = [{"group": r.group, "variant": r.variant, "overrides": r.overrides, "status": "done",
             "final:eval_loss": (r.overrides["model.emb_dim"] / 10 + (r.variant == "b"), 0.1)}
            for r in sw.expand(s)]
  # A numeric key: one connected series per variant, x = the key's values.
  sweep_plots.plot_metric_vs_key(s, groups, "model.emb_dim", str(tmp_path / "d.png"))
  (ax,) = data_axes(saved[-1])
  expected = {"variant=a": [(32, 3.2, 0.1), (64, 6.4, 0.1)],
              "variant=b": [(32, 4.2, 0.1), (64, 7.4, 0.1)]}
  check_errorbars(ax, expected)
  assert (ax.get_xlabel(), ax.get_ylabel()) == ("model.emb_dim", "final eval_loss")
  with pytest.raises(AssertionError):  # Negative control: the variants swapped.
    check_errorbars(ax, {"variant=a": expected["variant=b"], "variant=b": expected["variant=a"]})
  # A categorical key: categories at 0, 1 (series offset by +-0.04), named on the ticks.
  sweep_plots.plot_metric_vs_key(s, groups, "variant", str(tmp_path / "v.png"))
  (ax,) = data_axes(saved[-1])
  check_errorbars(ax, {"emb_dim=32": [(-0.04, 3.2, 0.1), (0.96, 4.2, 0.1)],
                       "emb_dim=64": [(0.04, 6.4, 0.1), (1.04, 7.4, 0.1)]})
  assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
  assert ax.get_xlim() == (-0.5, 1.5)
  with pytest.raises(AssertionError):  # Negative control: no offset between the series.
    check_errorbars(ax, {"emb_dim=32": [(0, 3.2, 0.1), (1, 4.2, 0.1)],
                         "emb_dim=64": [(0, 6.4, 0.1), (1, 7.4, 0.1)]})
