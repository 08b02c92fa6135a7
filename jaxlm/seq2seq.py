"""Greedy translation with a decoder-only LM trained on `source <sep> target <eos>` rows.

Shape key: B batch, W window (= data.seq_len), V vocab.

A row continues its prompt until `<eos>`, `max_decode_len` tokens or the end of the
W-token window the model was trained on, whichever comes first. `translate` decodes a causal
Transformer through the KV-cache `Generator` (one forward per new token); `greedy_decode` is
the cache-free reference for any model (each step reruns the fixed [B, W] window and reads
each row's logits at its own last position): both give the same ids (tests/test_finetune.py).
"""

from __future__ import annotations

import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.data.tokenizers import EOS_ID, SEP_ID


def prompt_ids(tokenizer, text: str, width: int) -> np.ndarray:
  """The source side as `tasks.encode_pairs` lays it out in a row of `width` (= seq_len + 1)."""
  return np.append(tokenizer.encode(text)[:width // 2 - 1], SEP_ID).astype(np.int32)


def greedy_decode(model, params, prompts: list[np.ndarray], max_new: int, window: int,
                  batch_size: int, mesh=None, rules=()) -> list[list[int]]:
  """Greedy continuations (without the final <eos>) of each prompt, at most `max_new` ids."""

  @jax.jit
  def next_ids(params, buf_BW, last_B):
    logits_BWV = model.apply({"params": params}, buf_BW)
    return jnp.argmax(logits_BWV[jnp.arange(buf_BW.shape[0]), last_B], axis=-1)

  outs: list[list[int]] = []
  ctx = jax.set_mesh(mesh) if mesh is not None else _null()
  with ctx, nn.logical_axis_rules(rules):
    for lo in range(0, len(prompts), batch_size):
      chunk = prompts[lo:lo + batch_size]
      buf = np.zeros((batch_size, window), np.int32)
      lens = np.ones(batch_size, np.int32)
      for i, p in enumerate(chunk):
        buf[i, :len(p)] = p[:window]
        lens[i] = min(len(p), window)
      start = lens.copy()
      done = np.arange(batch_size) >= len(chunk)
      done |= lens >= window
      for _ in range(max_new):
        if done.all():
          break
        ids = np.asarray(next_ids(params, buf, lens - 1))
        for i in np.flatnonzero(~done):
          if ids[i] == EOS_ID:
            done[i] = True
            continue
          buf[i, lens[i]] = ids[i]
          lens[i] += 1
          done[i] = lens[i] >= window
      outs.extend(buf[i, start[i]:lens[i]].tolist() for i in range(len(chunk)))
  return outs


def _generator(model, params, tokenizer, window: int, mesh=None, rules=()):
  from jaxlm.generate import Generator

  gen = Generator(model, params, tokenizer, mesh, rules)
  # Rows are cut below at their own window end, so a kept token never sits past the position
  # table; a longer prompt in the batch must not cap a shorter one's continuation.
  gen.max_context = 2 * window
  return gen


def cached_greedy_decode(model, params, tokenizer, prompts: list[np.ndarray], max_new: int,
                         window: int, batch_size: int, mesh=None, rules=(),
                         gen=None) -> list[list[int]]:
  """`greedy_decode`'s ids through the KV-cache `Generator` (causal Transformers); `gen`: one
  made by `_generator` earlier (its compiled programs are reused, its params replaced)."""
  if gen is None:
    gen = _generator(model, params, tokenizer, window, mesh, rules)
  gen.params = params
  outs: list[list[int]] = []
  for lo in range(0, len(prompts), batch_size):
    chunk = [p[:window] for p in prompts[lo:lo + batch_size]]
    room = [min(max_new, window - len(p)) for p in chunk]
    if max(room) < 1:
      outs.extend([] for _ in chunk)
      continue
    done = gen.generate_ids(chunk, max_new_tokens=max(room), temperature=0.0)
    outs.extend(d.ids[:r] for d, r in zip(done, room, strict=True))
  return outs


_GENERATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def translate(run, params, sources: list[str]) -> list[str]:
  """Greedy translations of `sources` with a TaskRun's model and tokenizer."""
  c = run.config
  window = c.data.seq_len
  prompts = [prompt_ids(run.tokenizer, s, window + 1) for s in sources]
  args = (prompts, c.finetune.max_decode_len, window, c.data.batch_size, run.mesh, run.rules)
  if c.model.family == "gpt" and c.model.causal:
    if run not in _GENERATORS:  # One per run: each evaluation reuses its compiled programs.
      _GENERATORS[run] = _generator(run.model, params, run.tokenizer, window, run.mesh, run.rules)
    ids = cached_greedy_decode(run.model, params, run.tokenizer, *args, gen=_GENERATORS[run])
  else:
    ids = greedy_decode(run.model, params, *args)
  return [run.tokenizer.decode(x) for x in ids]


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False
