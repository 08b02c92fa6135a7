"""A small HTTP JSON endpoint on localhost: the model is loaded once, requests queue.

  python -m jaxlm.serve --workdir=/tmp/jaxlm --port=8000
  curl -s localhost:8000/generate -d '{"prompt": "The ", "max_new_tokens": 50}'
  curl -s localhost:8000/health

`POST /generate` takes a JSON object with `prompt` (required) and optional
`max_new_tokens`, `temperature`, `top_k`, `top_p`, `seed` and `stop` (a string or
a list of strings); it answers `{completion, finish_reason, prompt_tokens,
completion_tokens, seconds}`. Bad input (invalid JSON, unknown fields, wrong types,
absurd values, a prompt too long for the context) gets a 4xx with a message. Threads
accept connections concurrently; one lock serializes the model, so concurrent
requests queue and each gets exactly what it would get alone.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jaxlm.generate import Generator

MAX_BODY_BYTES = 1 << 20
MAX_STOP_STRINGS, MAX_STOP_CHARS = 8, 200


class BadRequest(ValueError):
  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def _number(body, name, default, lo, hi, integer=False):
  v = body.get(name, default)
  ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
  if isinstance(v, bool) or not ok_type:
    raise BadRequest(f"'{name}' must be {'an integer' if integer else 'a number'}, got "
                     f"{json.dumps(v)}.")
  if not math.isfinite(v) or not lo <= v <= hi:
    raise BadRequest(f"'{name}'={v} is out of range; use {lo}..{hi}.")
  return v


class Service:
  """Validates requests and runs them one at a time on one `Generator`."""

  FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop")

  def __init__(self, generator: Generator, max_new_tokens: int = 256, info: dict | None = None):
    self.gen = generator
    self.max_new_tokens = max_new_tokens
    self.info = info or {}
    self.lock = threading.Lock()
    self.served = 0  # Completed generations.
    self.responses = 0  # POST /generate answers sent (any status).

  def parse(self, raw: bytes) -> dict:
    try:
      body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise BadRequest(f"The body is not valid JSON: {e}.") from e
    if not isinstance(body, dict):
      raise BadRequest("The body must be a JSON object like {\"prompt\": \"...\"}.")
    unknown = sorted(set(body) - set(self.FIELDS))
    if unknown:
      raise BadRequest(f"Unknown field(s) {unknown}; allowed: {list(self.FIELDS)}.")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
      raise BadRequest("'prompt' (a string) is required.")
    stop = body.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or \
        len(stop) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in stop):
      raise BadRequest(f"'stop' must be a non-empty string or a list of at most "
                       f"{MAX_STOP_STRINGS} non-empty strings of <= {MAX_STOP_CHARS} chars.")
    vocab = self.gen.cfg.vocab_size
    opts = {
        "max_new_tokens": _number(body, "max_new_tokens", min(64, self.max_new_tokens), 1,
                                  self.max_new_tokens, True),
        "temperature": float(_number(body, "temperature", 1.0, 0.0, 100.0)),
        "top_k": _number(body, "top_k", 0, 0, vocab, True),
        "top_p": float(_number(body, "top_p", 1.0, 1e-6, 1.0)),
        "seed": _number(body, "seed", 0, 0, 2**31 - 1, True),
        "stop": stop,
    }
    ids = self.gen.tokenizer.encode(prompt)
    room = self.gen.max_context - opts["max_new_tokens"]
    if len(ids) > room:
      raise BadRequest(f"The prompt is {len(ids)} tokens; with max_new_tokens="
                       f"{opts['max_new_tokens']} at most {max(room, 0)} fit the model's "
                       f"context of {self.gen.max_context}. Shorten it or lower max_new_tokens.",
                       413)
    return {"ids": ids, **opts}

  def generate(self, raw: bytes) -> dict:
    req = self.parse(raw)
    ids = req.pop("ids")
    t = time.time()
    with self.lock:
      out = self.gen.generate_ids([ids], **req)[0]
      self.served += 1
    return {"completion": out.text, "finish_reason": out.finish_reason,
            "prompt_tokens": len(ids), "completion_tokens": len(out.ids),
            "seconds": round(time.time() - t, 4)}


def make_handler(service: Service):
  class Handler(BaseHTTPRequestHandler):
    def _send(self, status: int, obj: dict) -> None:
      data = json.dumps(obj).encode("utf-8")
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def do_GET(self):  # noqa: N802
      if self.path != "/health":
        return self._send(404, {"error": f"No route GET {self.path}; try /health."})
      return self._send(200, {"status": "ok", "served": service.served, **service.info})

    def do_POST(self):  # noqa: N802
      if self.path != "/generate":
        return self._send(404, {"error": f"No route POST {self.path}; try /generate."})
      try:
        n = int(self.headers.get("Content-Length", ""))
      except ValueError:
        return self._send(411, {"error": "A Content-Length header is required."})
      if n < 0 or n > MAX_BODY_BYTES:
        self.close_connection = True
        return self._send(413, {"error": f"Body of {n} bytes; the limit is {MAX_BODY_BYTES}."})
      raw = self.rfile.read(n)
      try:
        self._send(200, service.generate(raw))
      except BadRequest as e:
        self._send(e.status, {"error": str(e)})
      except ValueError as e:  # From the generator: still the request's fault.
        self._send(400, {"error": str(e)})
      except Exception as e:  # noqa: BLE001  Never take the server down.
        self._send(500, {"error": f"{type(e).__name__}: {e}"})
      finally:
        service.responses += 1

    def do_PUT(self):  # noqa: N802
      self._send(405, {"error": "Use POST /generate or GET /health."})

    do_DELETE = do_PATCH = do_PUT

    def log_message(self, fmt, *args):
      sys.stderr.write("serve: " + fmt % args + "\n")

  return Handler


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000):
  server = ThreadingHTTPServer((host, port), make_handler(service))
  server.timeout = 0.2  # handle_request() returns this often (for --max_requests).
  return server


def main(argv=None) -> int:
  from absl import flags

  from jaxlm import inference
  f = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "Trained run's workdir.", flag_values=f)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=f)
  flags.DEFINE_string("host", "127.0.0.1", "Interface to bind (localhost by default).",
                      flag_values=f)
  flags.DEFINE_integer("port", 8000, "Port; 0 = any free port (printed).", flag_values=f)
  flags.DEFINE_integer("max_new_tokens", 256, "Largest max_new_tokens a request may ask.",
                       flag_values=f)
  flags.DEFINE_bool("int8", False, "Serve int8-quantized weights.", flag_values=f)
  flags.DEFINE_integer("max_requests", 0, "Exit after answering this many POST /generate "
                       "requests (0 = never).",
                       flag_values=f)
  f(argv if argv is not None else sys.argv)
  if not f.workdir:
    print("error: --workdir is required.", file=sys.stderr)
    return 2
  try:
    m = inference.load_for_inference(f.workdir, f.step)
  except (ValueError, OSError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  params = m.params
  if f.int8:
    from jaxlm import quantize
    params = quantize.quantize_params(params)
  gen = Generator(m.model, params, m.tokenizer, m.mesh, m.rules)
  service = Service(gen, f.max_new_tokens, {"workdir": f.workdir, "step": m.step,
                                            "int8": f.int8, "context": gen.max_context})
  server = make_server(service, f.host, f.port)
  print(f"serving {f.workdir} (step {m.step}) on http://{f.host}:{server.server_port}",
        flush=True)
  try:
    if f.max_requests:
      while service.responses < f.max_requests:
        server.handle_request()
    else:
      server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
