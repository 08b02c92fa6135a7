"""Continuous batching (each request gets what it would alone, rows with their own cache
index; 429;
a disconnect frees the slot) and `/v1/completions` through the real `openai` client."""

import http.client
import json
import socket
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm.batching import Engine, QueueFull, Request
from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.generate import Generator
from jaxlm.layers.transformer import TransformerConfig
from jaxlm.models import TransformerLM
from jaxlm.serve import Service, make_server

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def gen():
  cfg = TransformerConfig(vocab_size=TOK.vocab_size, num_layers=1, num_heads=2, emb_dim=16,
                          mlp_dim=32, max_len=32, position="rope")
  model = TransformerLM(cfg)
  params = nn.meta.unbox(model.init(jax.random.key(1), jnp.zeros((1, 4), jnp.int32))["params"])
  return Generator(model, params, TOK, max_context=32)


def _jobs(n):
  return [dict(ids=[int(t) for t in TOK.encode(f"p{i} " * (1 + i % 4))],
               max_new_tokens=4 + 3 * (i % 5), temperature=[0.0, 0.9, 1.3][i % 3],
               top_k=[0, 20][i % 2], top_p=[1.0, 0.9][i % 2], seed=i,
               stop=["zz"] if i % 4 == 3 else []) for i in range(n)]


def test_a_cache_with_one_index_per_row_writes_each_row_at_its_own_slot(gen):
  """Two rows at different depths decode one token each in one call: each row's logits equal
  its own batch-1 decode with a scalar index; control: a wrong index for one row changes its
  logits only."""
  dec = gen._decoder(16)
  prompts = [[5, 6, 7, 8, 9], [11, 12]]
  nxt = jnp.array([[40], [41]], jnp.int32)

  def prefilled(p):  # A batch-1 cache holding prompt p at slots [0, len(p)).
    ids = jnp.array([p], jnp.int32)
    pos = jnp.arange(len(p))[None]
    _, upd = dec.apply({"params": gen.params, "cache": gen.empty_cache(1, 16)}, ids, pos,
                       jnp.ones_like(ids), mutable=["cache"])
    return upd["cache"]

  alone = []
  for i, p in enumerate(prompts):
    out, _ = dec.apply({"params": gen.params, "cache": prefilled(p)}, nxt[i:i + 1],
                       jnp.array([[len(p)]]), jnp.ones((1, 1), jnp.int32), mutable=["cache"])
    alone.append(out[0, 0])
  # Both rows in one cache with a vector index [5, 2].
  one = [prefilled(p) for p in prompts]
  both = jax.tree_util.tree_map_with_path(
      lambda path, a, b: (jnp.array([len(prompts[0]), len(prompts[1])], jnp.int32)
                          if path[-1].key == "index" else jnp.concatenate([a, b])), *one)
  pos = jnp.array([[len(p)] for p in prompts])
  out, upd = dec.apply({"params": gen.params, "cache": both}, nxt, pos, jnp.ones((2, 1),
                       jnp.int32), mutable=["cache"])
  for i in range(2):
    np.testing.assert_allclose(out[i, 0], alone[i], rtol=1e-5, atol=1e-5)
  idx = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(upd["cache"])
         if path[-1].key == "index"]
  assert all(list(np.asarray(i)) == [6, 3] for i in idx)
  # Control: row 1 told to write at slot 1 overwrites its own second prompt token.
  bad = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.array([5, 1], jnp.int32) if path[-1].key == "index" else x, both)
  wrong, _ = dec.apply({"params": gen.params, "cache": bad}, nxt, pos, jnp.ones((2, 1),
                       jnp.int32), mutable=["cache"])
  np.testing.assert_allclose(wrong[0, 0], alone[0], rtol=1e-5, atol=1e-5)
  assert not np.allclose(wrong[1, 0], alone[1], rtol=1e-5, atol=1e-5)


def test_each_request_gets_what_it_would_alone_in_reused_rows(gen):
  """20 requests through 4 rows, each row with its own cache index: a reused row sees none
  of its earlier requests' entries."""
  engine = Engine(gen, slots=4, max_queue=64).start()
  try:
    jobs = _jobs(20)
    reqs = [engine.submit(Request(**j)) for j in jobs]
    for r in reqs:
      assert r.done.wait(300) and r.error is None, r.error
    assert engine.steps < sum(j["max_new_tokens"] for j in jobs)  # Rows decoded together.
    for j, r in zip(jobs, reqs, strict=True):
      want = gen.generate_ids([j["ids"]], **{k: v for k, v in j.items() if k != "ids"})[0]
      assert (r.ids_out, r.text, r.finish_reason) == (want.ids, want.text, want.finish_reason)
    # Negative control: another seed gives another sampled answer.
    other = engine.submit(Request(**{**jobs[1], "seed": 99, "max_new_tokens": 12}))
    base = engine.submit(Request(**{**jobs[1], "max_new_tokens": 12}))
    other.done.wait(60), base.done.wait(60)
    assert other.tokens != base.tokens
  finally:
    engine.stop()


def test_a_step_computes_only_the_rows_up_to_the_highest_occupied(gen):
  """A lone request decodes 1 row of 8; two (rows 0 and 1) the 4-row program; outputs are
  what each gets alone."""
  jobs = _jobs(3)[1:]
  engine = Engine(gen, slots=8, max_queue=8)
  reqs = [engine.submit(Request(**jobs[0]))]  # Queued before the engine starts: one admit.
  engine.start()
  try:
    assert reqs[0].done.wait(120) and reqs[0].error is None
    assert set(engine.rows_computed) == {1}  # Not 8 (every slot), as before.
    engine.rows_computed.clear()
    engine.stop()
    engine = Engine(gen, slots=8, max_queue=8)
    reqs = [engine.submit(Request(**j)) for j in jobs]  # Rows 0 and 1.
    engine.start()
    assert all(r.done.wait(120) and r.error is None for r in reqs)
    assert 4 in engine.rows_computed and set(engine.rows_computed) <= {1, 4}
    for j, r in zip(jobs, reqs, strict=True):
      want = gen.generate_ids([j["ids"]], **{k: v for k, v in j.items() if k != "ids"})[0]
      assert (r.ids_out, r.text, r.finish_reason) == (want.ids, want.text, want.finish_reason)
  finally:
    engine.stop()


def test_bounded_queue_and_cancel_free_the_slot(gen):
  engine = Engine(gen, slots=1, max_queue=2)  # Not started: requests stay queued.
  engine.submit(Request(ids=[5], max_new_tokens=3))
  engine.submit(Request(ids=[5], max_new_tokens=3))
  with pytest.raises(QueueFull, match="Retry later"):
    engine.submit(Request(ids=[5], max_new_tokens=3))
  engine2 = Engine(gen, slots=1, max_queue=4).start()
  try:
    long = engine2.submit(Request(ids=[5, 6], max_new_tokens=28, temperature=0.0))
    while not long.tokens:
      time.sleep(0.01)
    long.cancel()  # What a disconnect does.
    short = engine2.submit(Request(ids=[7], max_new_tokens=2))
    assert short.done.wait(60) and long.done.wait(60)
    assert long.finish_reason == "cancelled" and len(long.tokens) < 28
  finally:
    engine2.stop()


@pytest.fixture(scope="module")
def server(gen):
  srv = make_server(Service(gen, max_new_tokens=24, slots=4, max_queue=6), "127.0.0.1", 0)
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  yield srv.server_port
  srv.shutdown()
  srv.server_close()


def test_openai_client_completions_with_and_without_streaming(server, gen):
  openai = pytest.importorskip("openai", reason="the [eval] extra (openai) is not installed")
  client = openai.OpenAI(base_url=f"http://127.0.0.1:{server}/v1", api_key="unused")
  want = gen.generate(["Hello"], max_new_tokens=8, temperature=0.8, seed=3)[0]
  r = client.completions.create(model="m", prompt="Hello", max_tokens=8, temperature=0.8,
                                seed=3)
  assert r.choices[0].text == want.text and r.usage.completion_tokens == len(want.ids)
  chunks = list(client.completions.create(model="m", prompt="Hello", max_tokens=8,
                                          temperature=0.8, seed=3, stream=True))
  assert "".join(c.choices[0].text for c in chunks) == want.text
  assert chunks[-1].choices[0].finish_reason in ("length", "stop")
  chunks = list(client.completions.create(model="m", prompt="Hello", max_tokens=8, seed=3,
                                          temperature=0.8, stream=True,
                                          stream_options={"include_usage": True}))
  assert chunks[-1].usage.completion_tokens == len(want.ids) and not chunks[-1].choices
  # Token-id prompts, n choices (seed + j), several prompts.
  r = client.completions.create(model="m", prompt=[[72, 101], [104]], max_tokens=3, n=2,
                                temperature=1.0, seed=5)
  assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
  alone = gen.generate_ids([[104]], max_new_tokens=3, temperature=1.0, seed=6)[0]
  assert next(c.text for c in r.choices if c.index == 3) == alone.text


def test_echo_logprobs_score_every_prompt_token(server, gen):
  openai = pytest.importorskip("openai", reason="the [eval] extra (openai) is not installed")
  client = openai.OpenAI(base_url=f"http://127.0.0.1:{server}/v1", api_key="unused")
  prompt = "the cat sat"
  r = client.completions.create(model="m", prompt=prompt, max_tokens=1, temperature=0,
                                echo=True, logprobs=1)
  lp = r.choices[0].logprobs
  ids = [int(t) for t in TOK.encode(prompt)]
  assert r.choices[0].text.startswith(prompt)
  assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
  logits = gen.model.apply({"params": gen.params}, jnp.asarray([ids]))
  ref = np.asarray(jax.nn.log_softmax(logits[0]))
  want = [ref[i - 1, ids[i]] for i in range(1, len(ids))]
  assert np.allclose(lp.token_logprobs[1:len(ids)], want, atol=1e-4)
  assert np.isclose(lp.token_logprobs[-1], ref[-1].max(), atol=1e-4)  # Greedy next token.
  # What lm-eval's local-completions computes from it: sum over the continuation tokens.
  from lm_eval.models.openai_completions import LocalCompletionsAPI
  ll, _ = LocalCompletionsAPI.parse_logprobs(r.model_dump(), ctxlens=[4])[0]
  assert ll == pytest.approx(sum(want[3:]), abs=1e-4)


def test_429_when_the_queue_is_full_and_disconnects_free_slots(server):
  body = json.dumps({"prompt": "x", "max_new_tokens": 24, "temperature": 0}).encode()
  conns = []
  for _ in range(20):  # 4 slots + 6 queued; the rest get 429 (or wait on a slot freeing).
    c = socket.create_connection(("127.0.0.1", server))
    c.sendall(b"POST /generate HTTP/1.1\r\nContent-Length: " + str(len(body)).encode() +
              b"\r\n\r\n" + body)
    conns.append(c)
  answers = []
  for c in conns:
    c.settimeout(120)
    answers.append(c.recv(4096))
  got429 = [a for a in answers if b" 429 " in a.split(b"\r\n")[0]]
  assert got429 and b"Retry later" in got429[0]
  assert all(b" 200 " in a.split(b"\r\n")[0] or a in got429 for a in answers)
  for c in conns:
    c.close()
  # A client that goes away mid-generation frees its slot for the next one.
  c = socket.create_connection(("127.0.0.1", server))
  c.sendall(b"POST /generate HTTP/1.1\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\n\r\n" + body)
  c.close()
  conn = http.client.HTTPConnection("127.0.0.1", server, timeout=120)
  conn.request("GET", "/health")
  assert conn.getresponse().status == 200
