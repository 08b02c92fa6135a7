"""Continuous batching for serving: prefill, insert, generate (the JetStream design).

One engine thread owns a batched KV cache of `slots` rows. Each loop it admits
waiting requests into free rows (a request's prompt is prefilled alone, batch 1,
then its cache is inserted into the row), then runs one decode step for every row
at once and hands each active request its token. A request leaves its row at EOS,
its token limit, a stop string or when its client cancels; the row is reused. A request
takes the lowest free row and a step computes only the rows up to the highest occupied
one (rounded up to 1, 4, 16, ... rows: a few compiled programs), so a lightly loaded
server does not pay for its empty rows.

Each row has its own write index (the cache's `index` is a vector, see
`Attention._update_cache`): a prefilled prompt of n tokens fills the row's slots
[0, n), the rest of the row gets segment 0 (never attended to), and each decode step
writes every row at its own slot, so the cache holds one context per row
(`max_context` slots) and never shifts. Sampling uses each request's own key,
`fold_in(key(seed), step)`, as `Generator.generate_ids` does for one prompt, so a
request gets the tokens it would get alone.

Shape key: S slots (rows), C cache length, L prompt bucket, V vocab, K top log-probs.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm.generate import MIN_PROMPT_BUCKET, Generator, bucket, sample_logits

TOP_K_LOGPROBS = 5  # Most alternatives a request may ask for (OpenAI's `logprobs` limit).
MAX_CHUNK = 16  # Decode steps per device call: a power of two <= every active row's remaining.


class QueueFull(RuntimeError):
  """The waiting queue is at its bound; the server answers 429."""


@dataclasses.dataclass
class Request:
  ids: list[int]
  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  stop: list[str] = dataclasses.field(default_factory=list)
  # Filled in by the engine.
  tokens: list[int] = dataclasses.field(default_factory=list)
  logprobs: list[float] = dataclasses.field(default_factory=list)
  top: list[list[tuple[int, float]]] = dataclasses.field(default_factory=list)
  finish_reason: str | None = None
  error: str | None = None
  first_token_time: float | None = None
  cancelled: bool = False
  events: queue.Queue = dataclasses.field(default_factory=queue.Queue)  # None = finished.
  done: threading.Event = dataclasses.field(default_factory=threading.Event)

  def cancel(self) -> None:
    self.cancelled = True


class Engine:
  """Decodes up to `slots` requests together; `submit` queues at most `max_queue`."""

  def __init__(self, gen: Generator, slots: int = 8, max_queue: int = 64, warmup: bool = False):
    # Rows: a multiple of the mesh's data-parallel size (`Generator._batch_size`).
    self.gen, self.slots, self.max_queue = gen, gen._batch_size(int(slots)), int(max_queue)
    self.tok = gen.tokenizer
    # One context per row: every prompt (bucketed) and its tokens fit (`submit` checks).
    self.cache_len = bucket(gen.max_context, MIN_PROMPT_BUCKET)
    self.waiting: collections.deque[Request] = collections.deque()
    self.active: list[Request | None] = [None] * self.slots
    self.cv = threading.Condition()
    self.stopped = False
    self.steps = 0  # Batched decode steps run (for tests and logs).
    self.rows_computed = collections.Counter()  # Decode calls by rows computed (tests, logs).
    self._insert = jax.jit(self._insert_fn, donate_argnums=(0,))
    self._step = jax.jit(self._chunk_fn, static_argnames=("k", "rows"), donate_argnums=(1,))
    self.thread = threading.Thread(target=self._loop, name="jaxlm-engine", daemon=True)
    self._state = None
    self.warmup = warmup  # Compile every chunk size before serving (servers; not tests).

  # ------------------------------------------------------------------ public

  def start(self) -> Engine:
    if not self.thread.is_alive():
      self.thread.start()
    return self

  def stop(self) -> None:
    with self.cv:
      self.stopped = True
      self.cv.notify_all()

  def submit(self, req: Request) -> Request:
    if len(req.ids) + req.max_new_tokens > self.gen.max_context:
      raise ValueError(f"A prompt of {len(req.ids)} tokens plus max_new_tokens="
                       f"{req.max_new_tokens} exceeds the model's context of "
                       f"{self.gen.max_context}. Fix: shorten the prompt or lower it.")
    with self.cv:
      if len(self.waiting) >= self.max_queue:
        raise QueueFull(f"The server is busy: {len(self.waiting)} requests are waiting (the "
                        f"limit). Retry later.")
      self.waiting.append(req)
      self.cv.notify_all()
    return req

  def busy(self) -> dict:
    return {"active": sum(r is not None for r in self.active), "waiting": len(self.waiting),
            "slots": self.slots}

  # ------------------------------------------------------------------ device programs

  def _init_state(self):
    cache = jax.tree_util.tree_map_with_path(  # The index: one per row.
        lambda p, x: jnp.zeros(x.shape + (self.slots,), x.dtype) if p[-1].key == "index" else x,
        self.gen.empty_cache(self.slots, self.cache_len))
    v = self.gen.cfg.padded_vocab
    return {"cache": cache, "logits": jnp.zeros((self.slots, v), jnp.float32)}

  def _insert_fn(self, state, one_cache, logits_1V, row, n):
    """Writes a prefilled [1, L] cache (an n-token prompt, left-padded) into `row`'s slots
    [0, L) with the prompt first, and sets the row's index to n."""
    def put(path, big, small):
      name = path[-1].key
      if name == "index":
        return big.at[..., row].set(n)
      small = jnp.roll(small, n - small.shape[1], axis=1)  # Prompt first, padding after.
      if name == "segment":
        big = big.at[row].set(0)
      start = (row, 0) + (0,) * (big.ndim - 2)
      return jax.lax.dynamic_update_slice(big, small.astype(big.dtype), start)
    cache = jax.tree_util.tree_map_with_path(put, state["cache"], one_cache)
    return {"cache": cache, "logits": state["logits"].at[row].set(logits_1V[0])}

  def _step_fn(self, params, state, pos_S, active_S, step_S, seed_S, temp_S, topk_S, topp_S):
    """Samples one token per row from its pending logits, then runs it through the model."""
    logits_SV = state["logits"]
    keys = jax.vmap(lambda s, n: jax.random.fold_in(jax.random.key(s), n))(seed_S, step_S)
    tok_S = jax.vmap(lambda lg, k, t, tk, tp: sample_logits(lg[None], k, t, tk, tp)[0])(
        logits_SV, keys, temp_S, topk_S, topp_S).astype(jnp.int32)
    tok_S = jnp.where(active_S, tok_S, self.tok.pad_id)
    lp_SV = jax.nn.log_softmax(logits_SV, axis=-1)
    chosen_S = jnp.take_along_axis(lp_SV, tok_S[:, None], axis=-1)[:, 0]
    top_lp_SK, top_id_SK = jax.lax.top_k(lp_SV, TOP_K_LOGPROBS)
    dec = self.gen._decoder(self.cache_len)
    logits_S1V, upd = dec.apply({"params": self.gen._params(params), "cache": state["cache"]},
                                tok_S[:, None], pos_S[:, None],
                                active_S.astype(jnp.int32)[:, None], mutable=["cache"])
    new_logits = jnp.where(active_S[:, None], logits_S1V[:, 0].astype(jnp.float32), 0.0)
    return ({"cache": upd["cache"], "logits": new_logits}, tok_S, chosen_S, top_id_SK,
            top_lp_SK)

  def _chunk_fn(self, params, state, pos_S, active_S, step_S, seed_S, temp_S, topk_S, topp_S, *,
                k: int, rows: int):
    """`k` decode steps of the first `rows` rows in one call; outputs stacked [k, rows, ...]
    (the per-row inputs have `rows` entries); the other rows' cache is left as it is."""
    full = state
    if rows < self.slots:
      state = jax.tree.map(lambda x: x[:rows] if x.ndim else x, full)

    def body(carry, _):
      state, pos_S, step_S = carry
      state, *out = self._step_fn(params, state, pos_S, active_S, step_S, seed_S, temp_S,
                                  topk_S, topp_S)
      return (state, pos_S + 1, step_S + 1), out
    (state, _, _), (tok, lp, top_id, top_lp) = jax.lax.scan(body, (state, pos_S, step_S),
                                                             length=k)
    if rows < self.slots:  # Written back in place (the state is donated).
      state = jax.tree.map(lambda big, small: jax.lax.dynamic_update_slice(
          big, small, (0,) * big.ndim) if big.ndim else small, full, state)
    return state, tok, lp, top_id, top_lp

  def _row_bucket(self, occupied: int) -> int:
    """Rows a step computes for rows [0, occupied): 1, 4, 16, ... (at most `slots`)."""
    b = 1
    while b < occupied:
      b *= 4
    return min(self.slots, self.gen._batch_size(b))

  # ------------------------------------------------------------------ engine thread

  def _admit(self, req: Request, row: int) -> None:
    g = self.gen
    p = req.ids or [self.tok.eos_id]
    length = bucket(len(p), MIN_PROMPT_BUCKET)
    ids = np.zeros((g._batch_size(1), length), np.int32)  # Rows past the first are empty.
    seg, pos = np.zeros_like(ids), np.zeros_like(ids)
    ids[0, length - len(p):], seg[0, length - len(p):] = p, 1
    pos[0, length - len(p):] = np.arange(len(p))
    with g._context():
      one, logits = g._prefill(g.params, g._put(ids), g._put(seg), g._put(pos), cache_len=length)
      first = jax.tree.map(lambda x: x[:1] if x.ndim else x, one["cache"])
      self._state = self._insert(self._state, first, logits[:1], np.int32(row),
                                 np.int32(len(p)))
    req.pos, req.step = len(p), 0
    self.active[row] = req

  def _finish(self, row: int, reason: str | None = None, error: str | None = None) -> None:
    req = self.active[row]
    self.active[row] = None
    if error is None:
      c = self.gen._finish(np.array(req.tokens, np.int64), req.stop, None)
      req.finish_reason = reason or c.finish_reason
      keep = len(c.ids) + (c.finish_reason == "eos")
      req.tokens, req.logprobs, req.top = (req.tokens[:keep], req.logprobs[:keep],
                                           req.top[:keep])
      req.text, req.ids_out = c.text, c.ids
    req.error = error
    req.events.put(None)
    req.done.set()

  def _loop(self) -> None:
    import time
    try:
      self._state = self._init_state()
      ks = [1 << j for j in range(MAX_CHUNK.bit_length())] if self.warmup else []
      for rows in sorted({self._row_bucket(n) for n in range(1, self.slots + 1)}) if ks else ():
        z = np.zeros(rows, np.int32)
        for k in ks:  # All rows inactive: nothing changes but the compile cache.
          with self.gen._context():
            self._state, *_ = self._step(self.gen.params, self._state, z, z.astype(bool), z,
                                         z.astype(np.uint32), z.astype(np.float32), z,
                                         np.ones(rows, np.float32), k=k, rows=rows)
        self._state = self._init_state()
    except Exception as e:  # noqa: BLE001
      self._fail_all(f"engine start failed: {type(e).__name__}: {e}")
      return
    while True:
      with self.cv:
        while not self.stopped and not self.waiting and all(r is None for r in self.active):
          self.cv.wait()
        if self.stopped:
          break
        admit = []
        for row in range(self.slots):
          while self.active[row] is None and self.waiting:
            req = self.waiting.popleft()
            if not req.cancelled:
              admit.append((req, row))
              self.active[row] = req  # Reserved.
              break
            req.finish_reason = "cancelled"
            req.events.put(None)
            req.done.set()
      try:
        for req, row in admit:
          self._admit(req, row)
        if any(r is not None for r in self.active):
          self._decode_once(time)
      except Exception as e:  # noqa: BLE001  A failing step fails its requests, not the server.
        for row, r in enumerate(self.active):
          if r is not None:
            self._finish(row, error=f"{type(e).__name__}: {e}")
        self._state = self._init_state()
    self._fail_all("the server is shutting down")

  def _decode_once(self, time) -> None:
    act = [r is not None and not r.cancelled for r in self.active]
    for row, r in enumerate(self.active):
      if r is not None and r.cancelled:
        self._finish(row, "cancelled")
    if not any(act):
      return
    remaining = min(r.max_new_tokens - r.step for r, a in zip(self.active, act, strict=True)
                    if a)
    k = min(MAX_CHUNK, 1 << (max(remaining, 1).bit_length() - 1))  # No row runs past its end.
    rows = self._row_bucket(max(i for i, a in enumerate(act) if a) + 1)
    act, live = act[:rows], self.active[:rows]
    col = lambda f, dt: np.array([f(r) if a else 0 for r, a in zip(live, act, strict=True)], dt)
    with self.gen._context():
      self._state, tok, lp, top_id, top_lp = self._step(
          self.gen.params, self._state, col(lambda r: r.pos, np.int32), np.array(act),
          col(lambda r: r.step, np.int32), col(lambda r: r.seed, np.uint32),
          col(lambda r: r.temperature, np.float32), col(lambda r: r.top_k, np.int32),
          np.array([r.top_p if a else 1.0 for r, a in zip(live, act, strict=True)], np.float32),
          k=k, rows=rows)
    self.steps += k
    self.rows_computed[rows] += 1
    tok, lp, top_id, top_lp = map(np.asarray, (tok, lp, top_id, top_lp))
    now = time.time()
    for row in range(rows):
      r = self.active[row]
      if not act[row] or r is None:
        continue
      for j in range(k):  # Tokens past a row's end (EOS, stop) are dropped with it.
        t = int(tok[j, row])
        r.tokens.append(t)
        r.logprobs.append(float(lp[j, row]))
        r.top.append([(int(i), float(v)) for i, v in zip(top_id[j, row], top_lp[j, row],
                                                         strict=True)])
        r.first_token_time = r.first_token_time or now
        r.pos, r.step = r.pos + 1, r.step + 1
        r.events.put(t)
        if t == self.tok.eos_id or r.step >= r.max_new_tokens or (
            r.stop and self.gen._stop_index(r.tokens, r.stop) is not None):
          self._finish(row)
          break

  def _fail_all(self, message: str) -> None:
    with self.cv:
      pending = list(self.waiting) + [r for r in self.active if r is not None]
      self.waiting.clear()
      self.active = [None] * self.slots
    for r in pending:
      r.error = message
      r.events.put(None)
      r.done.set()

