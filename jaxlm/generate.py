"""Text generation: KV-cache decoding, batched and bucketed, plus the CLI.

  python -m jaxlm.generate --workdir=/tmp/jaxlm --prompt="The " --max_new_tokens=100

`Generator` prefills the (left-padded) prompts in one pass, writing every
layer's keys and values into the cache, then decodes one token per step inside a
`jax.lax.while_loop`. Shapes are bucketed (batch, prompt length and cache size
rounded up), so a server compiles a handful of programs, not one per request.
Rows of different lengths share one cache index: padding has segment id 0 (never
attended to) and each row counts its own positions from its first real token.
`cached=False` recomputes the whole sequence every step instead (the reference
and the benchmark baseline). `sample_text` is the simple windowed sampler used at
the end of training.

Shape key: B batch, L prompt length (bucket), S cache slots, N steps, V vocab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.data.tokenizers import Tokenizer

MIN_PROMPT_BUCKET = 16
STEPS_PER_CHUNK = 32  # Decode steps per device call when stop strings must be checked.


def sample_logits(logits_BV: jax.Array, rng, temperature=1.0, top_k=0, top_p=1.0) -> jax.Array:
  """Samples ids [B]; temperature <= 0 is greedy. All options may be traced scalars.

  top-k keeps the k largest logits; top-p then keeps the smallest prefix (by
  probability, after top-k) whose mass reaches p, always at least one token.
  """
  logits_BV = logits_BV.astype(jnp.float32)
  v = logits_BV.shape[-1]
  greedy_B = jnp.argmax(logits_BV, axis=-1)
  temperature = jnp.asarray(temperature, jnp.float32)
  scaled_BV = logits_BV / jnp.maximum(temperature, 1e-6)
  sorted_BV = -jnp.sort(-scaled_BV, axis=-1)
  top_k = jnp.asarray(top_k, jnp.int32)
  k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
  kth_B1 = jax.lax.dynamic_slice_in_dim(sorted_BV, k - 1, 1, axis=-1)
  in_k_BV = jnp.arange(v) < k
  cum_BV = jnp.cumsum(jax.nn.softmax(jnp.where(in_k_BV, sorted_BV, -jnp.inf), axis=-1), axis=-1)
  cut_B1 = jnp.minimum(jnp.sum(cum_BV < top_p, axis=-1, keepdims=True), k - 1)
  pth_B1 = jnp.take_along_axis(sorted_BV, cut_B1, axis=-1)
  keep_BV = (scaled_BV >= kth_B1) & (scaled_BV >= pth_B1)
  sampled_B = jax.random.categorical(rng, jnp.where(keep_BV, scaled_BV, -jnp.inf), axis=-1)
  return jnp.where(temperature > 0, sampled_B, greedy_B)


def bucket(n: int, minimum: int = 1) -> int:
  """The next power of two >= max(n, minimum)."""
  return 1 << max(int(n), int(minimum), 1).__sub__(1).bit_length()


@dataclasses.dataclass
class Completion:
  text: str
  ids: list[int]
  finish_reason: str  # eos | stop | length
  logits: np.ndarray | None = None  # [steps, V] when asked for (tests).


class Generator:
  """Batched sampling from a `TransformerLM`; jitted once per shape bucket.

  `params` may hold int8 `QArray` leaves (`jaxlm.quantize`); they are
  dequantized inside the jitted program.
  """

  def __init__(self, model: nn.Module, params, tokenizer: Tokenizer, mesh=None, rules=(),
               cached: bool = True, max_context: int | None = None):
    self.cfg = model.cfg
    self.model = model.clone(cfg=dataclasses.replace(model.cfg, decode=False, dropout=0.0,
                                                     attention_dropout=0.0))
    self.params, self.tokenizer, self.mesh, self.rules = params, tokenizer, mesh, tuple(rules)
    self.cached = cached
    learned = self.cfg.position == "learned"
    # Learned positions stop at the table; other schemes may run past the training length.
    self.max_context = max_context or (self.cfg.max_len if learned else 4 * self.cfg.max_len)
    if learned:
      self.max_context = min(self.max_context, self.cfg.max_len)
    self.traces = 0  # Number of (re)compilations, for tests and logs.
    self._prefill = jax.jit(self._prefill_fn, static_argnames=("cache_len",))
    self._decode = jax.jit(self._decode_fn, static_argnames=("chunk", "cache_len", "want_logits"),
                           donate_argnums=(1,))

  # --------------------------------------------------------------- device programs

  def _params(self, params):
    from jaxlm import quantize
    return quantize.dequantize(params)

  def _decoder(self, cache_len: int) -> nn.Module:
    return self.model.clone(cfg=dataclasses.replace(self.cfg, decode=True, cache_len=cache_len))

  def empty_cache(self, rows: int, cache_len: int):
    """A zero KV cache of `rows` x `cache_len` slots (every segment 0: nothing attended)."""
    ids = jnp.zeros((rows, 1), jnp.int32)
    shapes = jax.eval_shape(self._decoder(cache_len).init, jax.random.key(0), ids, ids, ids)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["cache"])

  def _prefill_fn(self, params, ids_BL, seg_BL, pos_BL, *, cache_len: int):
    """The prompt in one pass -> (state, logits of each row's last prompt token)."""
    self.traces += 1
    params = self._params(params)
    b, length = ids_BL.shape
    if not self.cached:  # The "cache" is the token buffer itself.
      pad = ((0, 0), (0, cache_len - length))
      buf = {"ids": jnp.pad(ids_BL, pad), "seg": jnp.pad(seg_BL, pad), "pos": jnp.pad(pos_BL, pad)}
      logits_BLV = self.model.apply({"params": params}, ids_BL, pos_BL, seg_BL)
      return {"buf": buf, "index": jnp.array(length, jnp.int32)}, logits_BLV[:, -1]
    cache = self.empty_cache(b, cache_len)
    logits_BLV, upd = self._decoder(cache_len).apply(
        {"params": params, "cache": cache}, ids_BL, pos_BL, seg_BL, mutable=["cache"])
    return {"cache": upd["cache"]}, logits_BLV[:, -1]

  def _forward_one(self, params, state, tok_B, pos_B, cache_len: int):
    """Logits [B, V] of the next token after `tok_B`, and the updated state."""
    seg_B1 = jnp.ones_like(tok_B)[:, None]
    if not self.cached:
      buf, i = state["buf"], state["index"]
      put = lambda a, x: jax.lax.dynamic_update_slice(a, x[:, None].astype(a.dtype), (0, i))
      buf = {"ids": put(buf["ids"], tok_B), "seg": put(buf["seg"], seg_B1[:, 0]),
             "pos": put(buf["pos"], pos_B)}
      logits_BSV = self.model.apply({"params": params}, buf["ids"], buf["pos"], buf["seg"])
      return jax.lax.dynamic_index_in_dim(logits_BSV, i, 1, False), {"buf": buf, "index": i + 1}
    dec = self._decoder(cache_len)
    logits_B1V, upd = dec.apply({"params": params, "cache": state["cache"]}, tok_B[:, None],
                                pos_B[:, None], seg_B1, mutable=["cache"])
    return logits_B1V[:, 0], {"cache": upd["cache"]}

  def _decode_fn(self, params, carry, limit, temperature, top_k, top_p, rng, *, chunk: int,
                 cache_len: int, want_logits: bool):
    """Up to `chunk` steps (fewer if all rows are done or `limit` steps were made)."""
    self.traces += 1
    params = self._params(params)
    eos, pad = self.tokenizer.eos_id, self.tokenizer.pad_id
    b = carry["logits"].shape[0]
    v = carry["logits"].shape[-1]
    out_BN = jnp.full((b, chunk), pad, jnp.int32)
    logits_BNV = jnp.zeros((b, chunk if want_logits else 0, v), jnp.float32)

    def cond(c):
      return (c["i"] < chunk) & (c["step"] < limit) & ~jnp.all(c["done"])

    def body(c):
      key = jax.random.fold_in(rng, c["step"])
      tok_B = sample_logits(c["logits"], key, temperature, top_k, top_p).astype(jnp.int32)
      tok_B = jnp.where(c["done"], pad, tok_B)
      out = c["out"].at[:, c["i"]].set(tok_B)
      lg = c["lg"].at[:, c["i"]].set(c["logits"]) if want_logits else c["lg"]
      done = c["done"] | (tok_B == eos)
      logits, state = self._forward_one(params, c["state"], tok_B, c["pos"], cache_len)
      return {**c, "logits": logits.astype(jnp.float32), "state": state, "pos": c["pos"] + 1,
              "done": done, "out": out, "lg": lg, "i": c["i"] + 1, "step": c["step"] + 1}

    c = jax.lax.while_loop(cond, body, {**carry, "out": out_BN, "lg": logits_BNV,
                                        "i": jnp.zeros((), jnp.int32)})
    out, lg, n = c.pop("out"), c.pop("lg"), c.pop("i")
    return c, out, lg, n

  # --------------------------------------------------------------- host side

  def _batch_size(self, n: int) -> int:
    b = bucket(n)
    if self.mesh is not None:
      from jaxlm import sharding
      dp = sharding.batch_sharding(self.mesh, self.rules).mesh.shape
      dp = dp.get("data", 1) * dp.get("fsdp", 1)
      b = -(-b // dp) * dp
    return b

  def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
                   temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                   stop: Sequence[str] = (), return_logits: bool = False) -> list[Completion]:
    """Continues each prompt (token ids); rows stop at EOS, a stop string or the limit."""
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={max_new_tokens}: must be at least 1.")
    prompts = [list(p) or [self.tokenizer.eos_id] for p in prompts]
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > self.max_context:
      raise ValueError(
          f"A prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the "
          f"model's context of {self.max_context} tokens ({self.cfg.position} positions, "
          f"max_len={self.cfg.max_len}). Fix: shorten the prompt or lower max_new_tokens.")
    n_rows, b = len(prompts), self._batch_size(len(prompts))
    length = bucket(longest, MIN_PROMPT_BUCKET)
    cache_len = length + bucket(max_new_tokens, MIN_PROMPT_BUCKET)
    ids = np.zeros((b, length), np.int32)
    seg = np.zeros((b, length), np.int32)
    pos = np.zeros((b, length), np.int32)
    next_pos = np.zeros((b,), np.int32)
    for r, p in enumerate(prompts):  # Left padding; positions count from the first token.
      ids[r, length - len(p):] = p
      seg[r, length - len(p):] = 1
      pos[r, length - len(p):] = np.arange(len(p))
      next_pos[r] = len(p)
    done = np.arange(b) >= n_rows
    chunk = STEPS_PER_CHUNK if stop else bucket(max_new_tokens, MIN_PROMPT_BUCKET)
    outs, logits_out = [], []
    with self._context():
      put = self._put
      state, logits = self._prefill(self.params, put(ids), put(seg), put(pos),
                                    cache_len=cache_len)
      carry = {"state": state, "logits": logits, "pos": put(next_pos), "done": put(done),
               "step": jnp.zeros((), jnp.int32)}
      rng = jax.random.key(seed)
      finished = np.zeros(b, bool)
      while True:
        carry, out, lg, n = self._decode(self.params, carry, max_new_tokens, temperature, top_k,
                                         top_p, rng, chunk=chunk, cache_len=cache_len,
                                         want_logits=return_logits)
        n = int(n)
        outs.append(np.asarray(out)[:, :n])
        if return_logits:
          logits_out.append(np.asarray(lg)[:, :n])
        finished |= np.asarray(carry["done"])
        step = int(carry["step"])
        if stop:
          hit = [r < n_rows and not finished[r] and self._stop_index(
              np.concatenate(outs, 1)[r], stop) is not None for r in range(b)]
          if any(hit):
            finished |= np.array(hit)
            carry["done"] = put(finished)
        if step >= max_new_tokens or finished[:n_rows].all() or n == 0:
          break
    toks = np.concatenate(outs, 1)
    lgs = np.concatenate(logits_out, 1) if return_logits else None
    return [self._finish(toks[r], stop, None if lgs is None else lgs[r]) for r in range(n_rows)]

  def _stop_index(self, toks, stop) -> int | None:
    text = self.tokenizer.decode([int(t) for t in toks if t != self.tokenizer.eos_id])
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None

  def _finish(self, toks, stop, logits) -> Completion:
    ids = [int(t) for t in toks]
    reason = "length"
    if self.tokenizer.eos_id in ids:
      ids, reason = ids[:ids.index(self.tokenizer.eos_id)], "eos"
    text = self.tokenizer.decode(ids)
    cut = self._stop_index(ids, stop) if stop else None
    if cut is not None:  # Keep the tokens up to the one that completes the stop string.
      text, reason = text[:cut], "stop"
      n = next(n for n in range(len(ids) + 1) if self._stop_index(ids[:n], stop) is not None)
      ids = ids[:n]
    if logits is not None:
      logits = logits[:len(ids) + (reason == "eos")]
    return Completion(text, ids, reason, logits)

  def generate(self, prompts: Sequence[str], **kwargs) -> list[Completion]:
    """Continues each text prompt; keyword options as in `generate_ids`."""
    return self.generate_ids([self.tokenizer.encode(p) for p in prompts], **kwargs)

  def _context(self):
    return mesh_context(self.mesh, self.rules)

  def _put(self, x: np.ndarray):
    if self.mesh is None:
      return jnp.asarray(x)
    from jaxlm import sharding
    spec = sharding.batch_sharding(self.mesh, self.rules).spec
    spec = jax.sharding.PartitionSpec(*spec[:x.ndim]) if x.ndim else jax.sharding.PartitionSpec()
    return jax.device_put(x, jax.sharding.NamedSharding(self.mesh, spec))


def mesh_context(mesh, rules) -> contextlib.ExitStack:
  """`with` the mesh (if any) and the logical-axis rules."""
  stack = contextlib.ExitStack()
  if mesh is not None:
    stack.enter_context(jax.set_mesh(mesh))
  stack.enter_context(nn.logical_axis_rules(tuple(rules)))
  return stack


# ----------------------------------------------------------------------------- training sample


def sample_text(model: nn.Module, params, tokenizer: Tokenizer, prompt: str, num_tokens: int,
                temperature: float = 1.0, top_k: int = 0, seed: int = 0, mesh=None,
                rules=()) -> str:
  """Continues `prompt` by `num_tokens` tokens without a cache (a sliding window of
  `max_len`, one compiled shape), so it may run past the context; stops at EOS."""
  window = model.cfg.max_len
  ids = list(tokenizer.encode(prompt)) or [tokenizer.eos_id]

  @jax.jit
  def next_token(params, buf_1W, length, rng):
    logits = model.apply({"params": params}, buf_1W)
    last = jax.lax.dynamic_index_in_dim(logits[0], length - 1, keepdims=False)
    return sample_logits(last[None], rng, temperature, top_k)[0]

  rng = jax.random.key(seed)
  out: list[int] = []
  with mesh_context(mesh, rules):
    for i in range(num_tokens):
      context = (ids + out)[-window:]
      buf = np.zeros((1, window), np.int32)
      buf[0, :len(context)] = context
      tok = int(next_token(params, jnp.asarray(buf), len(context), jax.random.fold_in(rng, i)))
      if tok == tokenizer.eos_id:
        break
      out.append(tok)
  return tokenizer.decode(out)


# ----------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
  from absl import flags

  from jaxlm import inference
  f = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "Trained run's workdir.", flag_values=f)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=f)
  flags.DEFINE_multi_string("prompt", [], "Prompt (repeat for a batch).", flag_values=f)
  flags.DEFINE_integer("max_new_tokens", 100, "Tokens to generate per sample.", flag_values=f)
  flags.DEFINE_float("temperature", 0.8, "0 = greedy.", flag_values=f)
  flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens; 0 = off.", flag_values=f)
  flags.DEFINE_float("top_p", 1.0, "Nucleus mass; 1 = off.", flag_values=f)
  flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=f)
  flags.DEFINE_integer("num_samples", 1, "Samples per prompt.", flag_values=f)
  flags.DEFINE_multi_string("stop", [], "Stop string (repeatable).", flag_values=f)
  flags.DEFINE_bool("int8", False, "Quantize weights to int8 first.", flag_values=f)
  f(argv if argv is not None else sys.argv)
  if not f.workdir:
    print("error: --workdir is required.", file=sys.stderr)
    return 2
  try:
    m = inference.load_for_inference(f.workdir, f.step)
    params = m.params
    if f.int8:
      from jaxlm import quantize
      params = quantize.quantize_params(params)
    gen = Generator(m.model, params, m.tokenizer, m.mesh, m.rules)
    prompts = [p for p in (f.prompt or [""]) for _ in range(f.num_samples)]
    outs = gen.generate(prompts, max_new_tokens=f.max_new_tokens, temperature=f.temperature,
                        top_k=f.top_k, top_p=f.top_p, seed=f.seed, stop=f.stop)
  except (ValueError, OSError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  for p, c in zip(prompts, outs, strict=True):
    print(f"--- [{c.finish_reason}, {len(c.ids)} tokens]\n{p}{c.text}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

