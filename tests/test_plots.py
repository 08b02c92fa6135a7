"""Each plot writes a real PNG of the expected size; log parsing; PCA."""

import json
import struct

import numpy as np
import pytest

from jaxlm.lab import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: str) -> tuple[int, int]:
  """(width, height) from the IHDR chunk, after checking the PNG signature."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == PNG_SIGNATURE
  assert head[12:16] == b"IHDR"
  return struct.unpack(">II", head[16:24])


def assert_png(path: str, figsize: tuple[float, float], dpi: int) -> None:
  w, h = png_size(path)
  assert abs(w - figsize[0] * dpi) <= 2 and abs(h - figsize[1] * dpi) <= 2, (w, h)


def test_plot_curves(tmp_path):
  curves = {
      "run-a": [(0, 3.0), (100, 2.5), (200, 2.2)],
      "run-b": [(200, 2.4), (0, 3.1), (100, 2.7)],  # Unsorted input is fine.
  }
  out = plots.plot_curves(curves, tmp_path / "curves.png", title="val", logy=True)
  assert out == str(tmp_path / "curves.png")
  assert_png(out, (7.0, 4.5), 100)  # The default size.
  out = plots.plot_curves(curves, tmp_path / "sub" / "c.png", logx=True, figsize=(4, 3), dpi=50)
  assert_png(out, (4, 3), 50)


def test_plot_metric_vs_param(tmp_path):
  pts = [(1e-4, 2.5, 0.1), (3e-4, 2.3, 0.05), (1e-3, 2.6, 0.2)]
  out = plots.plot_metric_vs_param(pts, tmp_path / "one.png", "lr", "val loss", logx=True)
  assert_png(out, (6.0, 4.5), 100)
  out = plots.plot_metric_vs_param(
      {"small": pts, "big": [(x, m - 0.3, s) for x, m, s in pts]},
      tmp_path / "two.png", "lr", "val loss", figsize=(5, 4), dpi=80,
  )
  assert_png(out, (5, 4), 80)


def test_plot_attention(tmp_path):
  rng = np.random.default_rng(0)
  t = 64
  logits = rng.normal(size=(3, t, t)) + np.triu(np.full((t, t), -1e9), 1)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  tokens = [" the", "$", "\n", "x_1", ""] + [f"t{i}" for i in range(t - 5)]
  out = plots.plot_attention(w, tokens, tmp_path / "attn.png", title="layer 0", dpi=40)
  assert_png(out, plots.attention_figsize(3, t, t), 40)
  out = plots.plot_attention(w[0][:8, :8], tokens[:8], tmp_path / "one.png", figsize=(4, 4))
  assert_png(out, (4, 4), 100)
  with pytest.raises(ValueError):
    plots.plot_attention(w, tokens[:10], tmp_path / "bad.png")


def test_plot_token_losses(tmp_path):
  tokens = ["Hello", ",", " world", "!", "\n"] * 30
  losses = np.linspace(0.0, 6.0, len(tokens))
  losses[3] = np.nan  # Unscored position: drawn grey.
  out = plots.plot_token_losses(tokens, losses, tmp_path / "tok.png", figsize=(8, 4), dpi=60)
  assert_png(out, (8, 4), 60)
  out = plots.plot_token_losses(tokens[:5], losses[:5], tmp_path / "short.png")
  assert png_size(out)[0] > 100
  with pytest.raises(ValueError):
    plots.plot_token_losses(tokens, losses[:3], tmp_path / "bad.png")


def test_pca_2d_recovers_dominant_direction():
  rng = np.random.default_rng(0)
  direction = rng.normal(size=16)
  direction /= np.linalg.norm(direction)
  t = rng.normal(size=300) * 5.0
  x = t[:, None] * direction + rng.normal(size=(300, 16)) * 0.1 + 3.0
  p = plots.pca_2d(x)
  assert p.shape == (300, 2)
  np.testing.assert_allclose(p.mean(0), 0.0, atol=1e-9)  # Centred.
  assert abs(np.corrcoef(p[:, 0], t)[0, 1]) > 0.999
  assert p[:, 0].var() > 100 * p[:, 1].var()
  # Projection onto the unit direction, up to sign.
  proj = (x - x.mean(0)) @ direction
  np.testing.assert_allclose(np.abs(p[:, 0]), np.abs(proj), atol=0.1)
  np.testing.assert_array_equal(plots.pca_2d(x), p)  # Deterministic signs.
  assert plots.pca_2d(np.ones((4, 1))).shape == (4, 2)  # D < 2.


def test_plot_embeddings_2d(tmp_path):
  rng = np.random.default_rng(1)
  pts = plots.pca_2d(rng.normal(size=(30, 8)))
  labels = [f"w{i}" for i in range(29)] + ["$x$"]
  out = plots.plot_embeddings_2d(pts, labels, tmp_path / "emb.png", title="emb", dpi=50)
  assert_png(out, (7.0, 7.0), 50)


def test_metrics_jsonl_and_curves(tmp_path):
  rows = [
      {"step": 100, "train_loss": 3.0},
      {"step": 100, "eval_loss": 2.9},
      {"step": 200, "train_loss": 2.5, "eval_loss": 2.6},
      {"step": 300, "eval_loss": 2.4},
      # Resumed from the step-200 checkpoint: step 300 is logged again.
      {"step": 300, "eval_loss": 2.35},
      {"step": 400, "eval_loss": None},
  ]
  path = tmp_path / "metrics.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n" + '{"step": 5')
  with pytest.warns(UserWarning, match="truncated"):
    read = plots.read_metrics_jsonl(path)
  assert read == rows
  assert plots.curves_from_metrics(read) == [(100, 2.9), (200, 2.6), (300, 2.35)]
  assert plots.curves_from_metrics(read, "train_loss") == [(100, 3.0), (200, 2.5)]
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
  with pytest.raises(ValueError, match=":2:"):
    plots.read_metrics_jsonl(bad)
