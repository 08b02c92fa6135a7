"""Looking inside a trained model: attention maps, per-token loss, embedding geometry.

  python -m jaxlm.lab.inspect --workdir=W --text="To be, or not to be" [--token=e] [--out=DIR]

writes to DIR (default `W/inspect`):
  attention_layer{i}.png  every head of layer i, query tokens on rows, keys on columns
  token_loss.png          the text as a strip of tokens coloured by their loss (nats)
  neighbours.md           the tokens whose learned embeddings are closest (cosine) to --token
  embeddings_pca.png      2-D PCA of the embeddings of the --top most frequent tokens
  inspect.json            the numbers behind the pictures

Token frequency is counted on the run's training split (its first --freq_docs
documents); if that data is not available, tokenizer order is used instead and
the outputs say so.
"""

from __future__ import annotations

import json
import os
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import restore
from jaxlm.data import sources
from jaxlm.data.tokenizers import NUM_SPECIAL
from jaxlm.lab import plots


def attention_and_losses(loaded: restore.Loaded, ids: np.ndarray) -> tuple[list, np.ndarray]:
  """Attention weights per layer ([H, L, L] each) and the loss of each token given the
  ones before it ([L]; NaN for the first, which has no prediction)."""
  run = loaded.run
  ids_1L = jnp.asarray(ids, jnp.int32)[None]
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    logits_1LV, state = loaded.model.apply({"params": loaded.params}, ids_1L,
                                           mutable=["intermediates"])
  leaves = jax.tree_util.tree_flatten_with_path(state.get("intermediates", {}))[0]
  layers = []
  for path, leaf in leaves:
    keys = "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)
    if "attention_weights" not in keys:
      continue
    w = np.asarray(leaf, np.float32)
    if w.ndim == 5:  # Scanned layers: [layers, B, H, L, S].
      layers += [(i, w[i, 0]) for i in range(w.shape[0])]
    else:
      m = re.search(r"layer_(\d+)", keys)
      layers.append((int(m.group(1)) if m else len(layers), w[0]))
  logp_LV = jax.nn.log_softmax(np.asarray(logits_1LV[0], np.float32), axis=-1)
  losses = np.full(len(ids), np.nan)
  losses[1:] = -np.asarray(logp_LV)[np.arange(len(ids) - 1), ids[1:]]
  return [w for _, w in sorted(layers, key=lambda t: t[0])], losses


def embedding_table(loaded: restore.Loaded) -> np.ndarray:
  """The learned input embeddings of the real vocabulary, [V, D]."""
  try:
    table = loaded.params["embed"]["embedding"]
  except (KeyError, TypeError) as e:
    raise ValueError("This model has no params['embed']['embedding'] token table.") from e
  return np.asarray(table, np.float32)[:loaded.tokenizer.vocab_size]


def nearest_neighbours(table_VD: np.ndarray, token_id: int, k: int = 10) -> list[tuple[int, float]]:
  """The k ids (special tokens excluded) with the highest cosine similarity to `token_id`."""
  unit = table_VD / np.maximum(np.linalg.norm(table_VD, axis=1, keepdims=True), 1e-12)
  cos = unit @ unit[token_id]
  cos[:NUM_SPECIAL] = -np.inf
  cos[token_id] = -np.inf
  order = np.argsort(-cos, kind="stable")[:k]
  return [(int(i), float(cos[i])) for i in order if np.isfinite(cos[i])]


def token_counts(loaded: restore.Loaded, max_docs: int) -> tuple[np.ndarray | None, str]:
  """Token counts over the first `max_docs` training documents, and where they came from."""
  d = loaded.config.data
  vocab = loaded.tokenizer.vocab_size
  try:
    counts = np.zeros(vocab, np.int64)
    docs = 0
    for text in sources.iter_texts(d, d.train_split, limit=max_docs):
      counts += np.bincount(loaded.tokenizer.encode(text), minlength=vocab)[:vocab]
      docs += 1
    return counts, f"training split ({docs} documents)"
  except (sources.DataError, OSError) as e:
    return None, f"tokenizer order (training data unavailable: {e})"


def inspect(workdir: str, text: str, out: str = "", token: str = "", top: int = 100,
            k: int = 10, freq_docs: int = 2000) -> dict:
  """Writes the pictures and tables described in the module docstring; returns a summary."""
  out = out or os.path.join(workdir, "inspect")
  os.makedirs(out, exist_ok=True)
  loaded = restore.load(workdir, sow_weights=True)
  tok = loaded.tokenizer
  ids = np.asarray(tok.encode(text), np.int64)[:loaded.model.cfg.max_len]
  if len(ids) < 2:
    raise ValueError(f"--text={text!r} is {len(ids)} token(s); give at least 2.")
  pieces = [tok.id_to_piece(int(i)) for i in ids]
  layers, losses = attention_and_losses(loaded, ids)
  paths = []
  for i, w in enumerate(layers):
    paths.append(plots.plot_attention(w, pieces, os.path.join(out, f"attention_layer{i}.png"),
                                      title=f"layer {i} attention (step {loaded.step})"))
  mean_loss = float(np.nanmean(losses))
  paths.append(plots.plot_token_losses(pieces, losses, os.path.join(out, "token_loss.png"),
                                       title=f"per-token loss, mean {mean_loss:.3f} nats"))

  table = embedding_table(loaded)
  counts, freq_source = token_counts(loaded, freq_docs)
  real = np.arange(NUM_SPECIAL, tok.vocab_size)
  by_freq = real[np.argsort(-counts[real], kind="stable")] if counts is not None else real
  if token:
    tid = tok.encode(token)
    if len(tid) != 1:
      raise ValueError(f"--token={token!r} encodes to {len(tid)} tokens; give exactly one token.")
    query = int(tid[0])
  else:
    query = int(by_freq[0])
  neighbours = nearest_neighbours(table, query, k)
  lines = [f"Nearest neighbours of `{plots.display_token(tok.id_to_piece(query))}` "
           f"(cosine of learned embeddings, step {loaded.step}):", "", "| token | cosine |",
           "|---|---|"]
  lines += [f"| `{plots.display_token(tok.id_to_piece(i))}` | {c:.3f} |" for i, c in neighbours]
  with open(os.path.join(out, "neighbours.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  chosen = by_freq[:top]
  paths.append(plots.plot_embeddings_2d(
      plots.pca_2d(table[chosen]), [tok.id_to_piece(int(i)) for i in chosen],
      os.path.join(out, "embeddings_pca.png"),
      title=f"PCA of the {len(chosen)} most frequent tokens' embeddings\n"
            f"(frequency: {freq_source.split(' (training data')[0]})"))
  summary = {
      "workdir": workdir, "step": loaded.step, "tokens": pieces,
      "token_losses": [None if np.isnan(x) else float(x) for x in losses],
      "mean_loss": mean_loss, "num_layers": len(layers),
      "query_token": tok.id_to_piece(query),
      "neighbours": [(tok.id_to_piece(i), c) for i, c in neighbours],
      "frequency_source": freq_source, "files": [os.path.basename(p) for p in paths],
  }
  with open(os.path.join(out, "inspect.json"), "w") as f:
    json.dump(summary, f, indent=1, ensure_ascii=False)
  return summary


def main(argv: list[str] | None = None) -> int:
  import argparse
  p = argparse.ArgumentParser(prog="python -m jaxlm.lab.inspect",
                              description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="A trained run's workdir.")
  p.add_argument("--text", required=True, help="Text to run through the model.")
  p.add_argument("--out", default="", help="Output dir (default: WORKDIR/inspect).")
  p.add_argument("--token", default="", help="Token whose neighbours to list (default: the "
                 "most frequent).")
  p.add_argument("--top", type=int, default=100, help="Most frequent tokens in the PCA plot.")
  p.add_argument("--k", type=int, default=10, help="Neighbours to list.")
  p.add_argument("--freq_docs", type=int, default=2000, help="Training documents to count.")
  a = p.parse_args(argv)
  try:
    s = inspect(a.workdir, a.text, a.out, a.token, a.top, a.k, a.freq_docs)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"step {s['step']}: mean loss {s['mean_loss']:.3f} nats over {len(s['tokens'])} tokens; "
        f"{s['num_layers']} attention maps; frequency from {s['frequency_source']}")
  near = ", ".join(f"{t!r} {c:.2f}" for t, c in s["neighbours"])
  print(f"neighbours of {s['query_token']!r}: {near}")
  print("wrote", ", ".join(s["files"]), "neighbours.md, inspect.json to",
        a.out or os.path.join(a.workdir, "inspect"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
