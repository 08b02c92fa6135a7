"""The HTTP endpoint: answers, 4xx for bad input, concurrent requests, the CLI."""

import http.client
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import pytest
from conftest import REPO, cpu_env
from inference_helpers import random_workdir

from jaxlm.data.tokenizers import ByteTokenizer
from jaxlm.generate import Generator
from jaxlm.layers.transformer import TransformerConfig
from jaxlm.models import TransformerLM
from jaxlm.serve import Service, make_server


@pytest.fixture(scope="module")
def server():
  cfg = TransformerConfig(vocab_size=ByteTokenizer().vocab_size, num_layers=1, num_heads=2,
                          emb_dim=16, mlp_dim=32, max_len=64, position="rope")
  model = TransformerLM(cfg)
  import flax.linen as nn
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  gen = Generator(model, params, ByteTokenizer())
  srv = make_server(Service(gen, max_new_tokens=32), "127.0.0.1", 0)
  thread = threading.Thread(target=srv.serve_forever, daemon=True)
  thread.start()
  yield srv.server_port, gen
  srv.shutdown()
  srv.server_close()


def request(port, method, path, body=None, raw=None):
  conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
  data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
  conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
  resp = conn.getresponse()
  out = resp.status, json.loads(resp.read())
  conn.close()
  return out


def test_health_and_generate_match_the_generator(server):
  port, gen = server
  assert request(port, "GET", "/health")[0] == 200
  status, out = request(port, "POST", "/generate", {"prompt": "Hi", "max_new_tokens": 6,
                                                    "temperature": 0})
  assert status == 200, out
  want = gen.generate(["Hi"], max_new_tokens=6, temperature=0.0)[0]
  assert out["completion"] == want.text and out["completion_tokens"] == len(want.ids)
  assert out["prompt_tokens"] == 2 and out["finish_reason"] in ("length", "eos")


@pytest.mark.parametrize("raw, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"prompt": "a", "tempreature": 1}', 400, "Unknown field"),
    (b'{"max_new_tokens": 5}', 400, "'prompt'"),
    (b'{"prompt": "a", "max_new_tokens": true}', 400, "integer"),
    (b'{"prompt": "a", "max_new_tokens": 1000000000}', 400, "out of range"),
    (b'{"prompt": "a", "temperature": -1}', 400, "out of range"),
    (b'{"prompt": "a", "temperature": NaN}', 400, "out of range"),
    (b'{"prompt": "a", "top_p": 0}', 400, "out of range"),
    (b'{"prompt": "a", "top_k": "5"}', 400, "integer"),
    (b'{"prompt": "a", "stop": [1]}', 400, "'stop'"),
    (b'{"prompt": "' + b"x" * 300 + b'", "max_new_tokens": 10}', 413, "Shorten"),
    (b"\xff\xfe", 400, "not valid JSON"),
])
def test_bad_requests_get_4xx_with_a_message(server, raw, status, message):
  port, _ = server
  got, body = request(port, "POST", "/generate", raw=raw)
  assert got == status and message in body["error"], body
  assert request(port, "GET", "/health")[0] == 200  # Still alive.


def test_unknown_routes(server):
  port, _ = server
  assert request(port, "GET", "/nope")[0] == 404
  assert request(port, "POST", "/health", {})[0] == 404
  assert request(port, "PUT", "/generate", {})[0] == 405


def test_concurrent_requests_each_get_their_own_answer(server):
  port, gen = server
  jobs = [{"prompt": f"p{i}", "max_new_tokens": 5 + i % 3, "temperature": 0.9, "seed": i,
           "top_k": 20} for i in range(8)]
  with ThreadPoolExecutor(8) as pool:
    answers = list(pool.map(lambda j: request(port, "POST", "/generate", j), jobs))
  for job, (status, out) in zip(jobs, answers, strict=True):
    assert status == 200, out
    opts = {k: v for k, v in job.items() if k != "prompt"}
    assert out["completion"] == gen.generate([job["prompt"]], **opts)[0].text


def test_cli_serves_a_workdir_and_stops_by_itself(tmp_path, text_file, data_dir):
  wd = random_workdir(str(tmp_path / "wd"), text_file, data_dir)
  env = cpu_env(1)
  proc = subprocess.Popen([sys.executable, "-m", "jaxlm.serve", f"--workdir={wd}", "--port=0",
                           "--max_requests=2", "--max_new_tokens=8"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = proc.stdout.readline()
    assert "serving" in line, proc.stderr.read()
    port = int(line.rsplit(":", 1)[1])
    status, out = request(port, "POST", "/generate", {"prompt": "the", "max_new_tokens": 4})
    assert status == 200 and out["completion_tokens"] <= 4
    assert request(port, "POST", "/generate", {"prompt": "a", "max_new_tokens": 99})[0] == 400
    assert proc.wait(timeout=60) == 0
  finally:
    if proc.poll() is None:
      proc.kill()


# ----------------------------------------------------------------------------- #17 item 7


def _raw(port, data: bytes) -> bytes:
  import socket
  with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
    s.sendall(data)
    out = b""
    while chunk := s.recv(65536):
      out += chunk
  return out


@pytest.mark.parametrize("data", [b"GARBAGE\r\n\r\n", b"GET /health HTTP/9.9\r\n\r\n",
                                  b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n",
                                  b"OPTIONS /generate HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_every_error_is_json(server, data):
  port, _ = server
  out = _raw(port, data)
  head, _, body = out.partition(b"\r\n\r\n")
  assert b" 200 " not in head.split(b"\r\n")[0], out
  assert b"application/json" in head, out
  if not data.startswith(b"HEAD"):
    assert "error" in json.loads(body)


def test_deep_json_and_huge_integers_are_400(server):
  port, _ = server
  status, body = request(port, "POST", "/generate", raw=b"[" * 100_000 + b"]" * 100_000)
  assert status == 400 and "nested" in body["error"]
  status, body = request(port, "POST", "/generate",
                         raw=b'{"prompt": "a", "seed": 1' + b"0" * 5000 + b"}")
  assert status == 400, body
  status, body = request(port, "POST", "/generate",
                         raw=b'{"prompt": "a", "max_new_tokens": 1' + b"0" * 400 + b"}")
  assert status == 400, body


def test_control_bytes_in_the_request_line_are_escaped_in_the_log(server, capfd):
  port, _ = server
  _raw(port, b"GET /he\x1b[31mllo\x07 HTTP/1.1\r\nHost: x\r\n\r\n")
  err = capfd.readouterr().err
  assert "\\x1b[31mllo\\x07" in err and "\x1b" not in err


def test_default_length_fits_a_short_context():
  cfg = TransformerConfig(vocab_size=ByteTokenizer().vocab_size, num_layers=1, num_heads=2,
                          emb_dim=16, mlp_dim=32, max_len=24, position="learned")
  model = TransformerLM(cfg)
  import flax.linen as nn
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  service = Service(Generator(model, params, ByteTokenizer()), max_new_tokens=256, slots=0)
  req = service.parse(b'{"prompt": "hello there"}')  # 11 tokens; the default was 64 -> 413.
  assert req["max_new_tokens"] == 24 - 11
  assert service.generate(b'{"prompt": "hello there", "temperature": 0}')["completion_tokens"] \
      <= 13


def test_idle_connections_time_out_and_the_connection_cap_answers_503(monkeypatch):
  import socket

  from jaxlm import serve
  cfg = TransformerConfig(vocab_size=ByteTokenizer().vocab_size, num_layers=1, num_heads=2,
                          emb_dim=16, mlp_dim=32, max_len=32, position="rope")
  model = TransformerLM(cfg)
  import flax.linen as nn
  params = nn.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  monkeypatch.setattr(serve, "IDLE_TIMEOUT_S", 1.0)
  srv = make_server(Service(Generator(model, params, ByteTokenizer()), slots=0), "127.0.0.1",
                    0, max_connections=3)
  assert srv.request_queue_size >= 128
  threading.Thread(target=srv.serve_forever, daemon=True).start()
  port = srv.server_port
  try:
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    import time
    time.sleep(0.3)
    assert b" 503 " in _raw(port, b"GET /health HTTP/1.1\r\n\r\n").split(b"\r\n")[0]
    time.sleep(2.0)  # The idle ones time out and free their places.
    assert request(port, "GET", "/health")[0] == 200
    for s in idle:
      assert s.recv(100) == b""  # Closed by the server.
      s.close()
  finally:
    srv.shutdown()
    srv.server_close()
