"""OpenAI-compatible `POST /v1/completions` for `jaxlm.serve` (what lm-eval's
`local-completions` model and the `openai` client speak).

Fields: `prompt` (a string, a list of strings, a list of token ids or a list of such
lists), `max_tokens` (default 16 as in OpenAI, cut to fit the context; 0 with `echo`
only scores the prompt), `temperature`, `top_p`, `top_k`, `n` (choice j uses seed+j),
`seed`, `stop`, `logprobs` (0-5 alternatives per token), `echo` (the prompt is prepended
to the text and, with `logprobs`, gets one log-probability per prompt token: null for the
first, then log p(token | earlier tokens)), `stream` (server-sent events, then
`data: [DONE]`). `model`, `user` and zero penalties are accepted and ignored.
"""

from __future__ import annotations

import json
import time
import uuid

import jax
import jax.numpy as jnp
import numpy as np

from jaxlm import batching
from jaxlm.generate import MIN_PROMPT_BUCKET, bucket
from jaxlm.request_json import BadRequest, _number, parse_json

FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "seed", "stop",
          "logprobs", "echo", "stream", "user", "presence_penalty", "frequency_penalty",
          "best_of", "stream_options", "logit_bias", "suffix"}
MAX_N = 16
FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "cancelled"}


def models(service) -> dict:
  return {"object": "list", "data": [{"id": _model_name(service), "object": "model",
                                      "owned_by": "jaxlm"}]}


def _model_name(service) -> str:
  return str(service.info.get("workdir") or "jaxlm")


def _prompts(service, body) -> list[list[int]]:
  p = body.get("prompt")
  vocab = service.gen.cfg.vocab_size
  if isinstance(p, str):
    p = [p]
  elif isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool)
                                         for t in p):
    p = [p]
  if not isinstance(p, list) or not p or len(p) > MAX_N:
    raise BadRequest(f"'prompt' must be a string, a list of token ids, or a list of (at most "
                     f"{MAX_N}) strings or id lists.")
  out = []
  for x in p:
    if isinstance(x, str):
      out.append([int(t) for t in service.gen.tokenizer.encode(x)])
    elif isinstance(x, list) and all(isinstance(t, int) and not isinstance(t, bool) and
                                     0 <= t < vocab for t in x):
      out.append(list(x))
    else:
      raise BadRequest(f"'prompt': each entry must be a string or a list of token ids in "
                       f"0..{vocab - 1}.")
  return out


def parse(service, raw: bytes) -> dict:
  body = parse_json(raw)
  unknown = sorted(set(body) - FIELDS)
  if unknown:
    raise BadRequest(f"Unknown field(s) {unknown}; allowed: {sorted(FIELDS)}.")
  for k in ("presence_penalty", "frequency_penalty"):
    if body.get(k) not in (None, 0, 0.0):
      raise BadRequest(f"'{k}' is not supported (only 0).")
  if body.get("logit_bias") or body.get("suffix"):
    raise BadRequest("'logit_bias' and 'suffix' are not supported.")
  prompts = _prompts(service, body)
  echo, stream = bool(body.get("echo", False)), bool(body.get("stream", False))
  logprobs = body.get("logprobs")
  logprobs = None if logprobs is None else _number(body, "logprobs", 0, 0,
                                                   batching.TOP_K_LOGPROBS, True)
  n = _number(body, "n", 1, 1, MAX_N, True)
  if body.get("best_of") not in (None, n):
    raise BadRequest("'best_of' must equal 'n' (no server-side reranking).")
  longest = max(len(p) for p in prompts)
  if body.get("max_tokens") == 0 and echo:
    opts = service.options({k: v for k, v in body.items() if k != "max_tokens"}, "max_tokens",
                           0)
    opts["max_new_tokens"] = 0
    if longest > service.gen.max_context:
      raise BadRequest(f"A prompt of {longest} tokens exceeds the model's context of "
                       f"{service.gen.max_context}.", 413)
  else:
    b = dict(body)
    b.setdefault("max_tokens", min(16, max(1, service.gen.max_context - longest)))
    if b["max_tokens"] is None:
      b["max_tokens"] = min(16, max(1, service.gen.max_context - longest))
    opts = service.options(b, "max_tokens", longest)
  if len(prompts) * n > MAX_N:
    raise BadRequest(f"{len(prompts)} prompts x n={n} choices; at most {MAX_N} per request.")
  so = body.get("stream_options") or {}
  if not isinstance(so, dict) or set(so) - {"include_usage"}:
    raise BadRequest("'stream_options' may only hold 'include_usage'.")
  return {"prompts": prompts, "n": n, "echo": echo, "stream": stream, "logprobs": logprobs,
          "opts": opts, "include_usage": bool(so.get("include_usage"))}


def prompt_logprobs(service, ids: list[int], k: int) -> tuple[list, list]:
  """(log p of each prompt token given the earlier ones, top-k {id: lp}) for tokens 1..n-1."""
  g = service.gen
  if len(ids) < 2:
    return [], []
  fn = getattr(service, "_score_fn", None)
  if fn is None:
    def score(params, ids_BL):
      logits = g.model.apply({"params": g._params(params)}, ids_BL)
      lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
      top_lp, top_id = jax.lax.top_k(lp, batching.TOP_K_LOGPROBS)
      return lp, top_id, top_lp
    fn = service._score_fn = jax.jit(score)
  length = bucket(len(ids), MIN_PROMPT_BUCKET)
  buf = np.zeros((g._batch_size(1), length), np.int32)
  buf[0, :len(ids)] = ids
  with g._context():
    lp, top_id, top_lp = fn(g.params, g._put(buf))
  lp, top_id, top_lp = np.asarray(lp[0]), np.asarray(top_id[0]), np.asarray(top_lp[0])
  chosen = [float(lp[i - 1, ids[i]]) for i in range(1, len(ids))]
  tops = [[(int(a), float(b)) for a, b in zip(top_id[i - 1, :k], top_lp[i - 1, :k],
                                              strict=True)] for i in range(1, len(ids))]
  return chosen, tops


def _logprobs_obj(service, ids, lps, tops, k, offset0, prompt: bool) -> dict:
  tok = service.gen.tokenizer
  strs = [tok.decode([t]) for t in ids]
  offsets, o = [], offset0
  for s in strs:
    offsets.append(o)
    o += len(s)
  top = [None if t is None else {tok.decode([i]): lp for i, lp in t[:k]} for t in tops]
  return {"tokens": strs, "token_logprobs": lps, "top_logprobs": top, "text_offset": offsets}


def _choice_logprobs(service, p, r, want, echo) -> dict | None:
  if want is None:
    return None
  tok = service.gen.tokenizer
  ids, lps, tops = [], [], []
  if echo:
    chosen, ptops = prompt_logprobs(service, p, want)
    ids, lps, tops = list(p), [None, *chosen], [None, *ptops]
    if not p:
      ids, lps, tops = [], [], []
  n = len(r.ids_out) + (r.finish_reason == "eos")
  gen_ids = r.tokens[:n]
  ids += gen_ids
  lps += r.logprobs[:n]
  tops += [t for t in r.top[:n]]
  return _logprobs_obj(service, ids, lps, tops, want, 0, False) if tok else None


def completions(service, raw: bytes, handler) -> None:
  req = parse(service, raw)
  cid, created, model = f"cmpl-{uuid.uuid4().hex[:24]}", int(time.time()), _model_name(service)
  tok = service.gen.tokenizer
  jobs = [(i * req["n"] + j, p, {**req["opts"], "seed": req["opts"]["seed"] + j})
          for i, p in enumerate(req["prompts"]) for j in range(req["n"])]
  if req["stream"]:
    return _stream(service, handler, req, jobs, cid, created, model)
  choices, completion_tokens = [], 0
  results = _run_all(service, handler, jobs)
  for (index, p, _), r in zip(jobs, results, strict=True):
    text = (tok.decode(p) if req["echo"] else "") + r.text
    completion_tokens += len(r.ids_out)
    choices.append({"text": text, "index": index, "finish_reason": FINISH[r.finish_reason],
                    "logprobs": _choice_logprobs(service, p, r, req["logprobs"], req["echo"])})
  prompt_tokens = sum(len(p) for p in req["prompts"])
  handler._send(200, {"id": cid, "object": "text_completion", "created": created, "model": model,
                      "choices": choices, "usage": {
                          "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}})


def _scored_only(p) -> batching.Request:
  r = batching.Request(ids=p, max_new_tokens=0)
  r.text, r.ids_out, r.finish_reason = "", [], "length"
  r.events.put(None)
  r.done.set()
  return r


def _submit_all(service, jobs) -> list[batching.Request]:
  """Submits every choice to the engine; if the queue is full, none of them stays queued."""
  reqs = [batching.Request(ids=p, **opts) for _, p, opts in jobs]
  try:
    for r in reqs:
      service.engine.submit(r)
  except batching.QueueFull:
    for r in reqs:
      r.cancel()
    raise
  return reqs


def _run_all(service, handler, jobs) -> list[batching.Request]:
  """Runs every choice, all submitted to the engine at once."""
  if jobs[0][2]["max_new_tokens"] == 0:
    return [_scored_only(p) for _, p, _ in jobs]
  if service.engine is None:
    return [service.run({"ids": p, **opts}, handler.alive) for _, p, opts in jobs]
  reqs = _submit_all(service, jobs)
  for r in reqs:
    while not r.done.wait(0.05):
      if not handler.alive():
        for x in reqs:
          x.cancel()
    if r.error:
      raise RuntimeError(r.error)
  service.served += len(reqs)
  return reqs


def _visible(tok, tokens, stop) -> str:
  """Text safe to send so far: cut at a stop string, holding back a possible stop prefix."""
  text = tok.decode([t for t in tokens if t != tok.eos_id])
  cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
  if cuts:
    return text[:min(cuts)]
  hold = max([n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])], default=0)
  text = text[:len(text) - hold]
  return text.rstrip("\ufffd")  # An incomplete UTF-8 sequence may still change.


def _stream(service, handler, req, jobs, cid, created, model) -> None:
  tok = service.gen.tokenizer
  if service.engine is None or jobs[0][2]["max_new_tokens"] == 0:
    reqs = _run_all(service, handler, jobs)
  else:
    reqs = _submit_all(service, jobs)
  handler.send_response(200)
  handler.send_header("Content-Type", "text/event-stream")
  handler.send_header("Cache-Control", "no-cache")
  handler.send_header("Connection", "close")
  handler.end_headers()
  handler.close_connection = True

  def send(index, text, finish=None, logprobs=None):
    chunk = {"id": cid, "object": "text_completion", "created": created, "model": model,
             "choices": [{"text": text, "index": index, "logprobs": logprobs,
                          "finish_reason": finish}]}
    handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
    handler.wfile.flush()

  try:
    sent = {}
    for index, p, _ in jobs:
      sent[index] = ""
      if req["echo"]:
        send(index, tok.decode(p))
    live = list(zip(jobs, reqs, strict=True))
    while live:
      for (index, p, opts), r in list(live):
        got = False
        while True:
          try:
            ev = r.events.get(timeout=0.02) if not got else r.events.get_nowait()
          except Exception:  # noqa: BLE001  queue.Empty
            break
          got = True
          if ev is None:
            if r.error:
              raise RuntimeError(r.error)
            rest = r.text[len(sent[index]):] if r.text.startswith(sent[index]) else ""
            send(index, rest, FINISH[r.finish_reason])
            live.remove(((index, p, opts), r))
            break
          now = _visible(tok, r.tokens, opts["stop"])
          if len(now) > len(sent[index]) and now.startswith(sent[index]):
            send(index, now[len(sent[index]):])
            sent[index] = now
    if req["include_usage"]:  # OpenAI's stream_options: a last chunk with the token counts.
      prompt_tokens = sum(len(p) for p in req["prompts"])
      done = sum(len(r.ids_out) for r in reqs)
      handler.wfile.write(("data: " + json.dumps({
          "id": cid, "object": "text_completion", "created": created, "model": model,
          "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": done,
                                   "total_tokens": prompt_tokens + done}}) + "\n\n").encode())
    handler.wfile.write(b"data: [DONE]\n\n")
    handler.wfile.flush()
    service.served += len(reqs)
  except OSError:  # The client went away: free the slots.
    for r in reqs:
      r.cancel()
