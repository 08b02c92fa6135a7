"""An HTTP JSON server on localhost: continuous batching, `/generate` and OpenAI `/v1/completions`.

  python -m jaxlm.serve --workdir=/tmp/jaxlm --port=8000 [--slots=16] [--max_queue=64]
  curl -s localhost:8000/generate -d '{"prompt": "The ", "max_new_tokens": 50}'
  curl -s localhost:8000/v1/completions -d '{"prompt": "The ", "max_tokens": 50, "stream": true}'
  openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none").completions.create(...)

`POST /generate` takes `prompt` (required) and optional `max_new_tokens`, `temperature`,
`top_k`, `top_p`, `seed` and `stop`; it answers `{completion, finish_reason, prompt_tokens,
completion_tokens, seconds}`. `POST /v1/completions` follows OpenAI's completions API
(see `jaxlm.openai_api`). By default requests are served one at a time. `--slots=N`
decodes up to N requests together in one `batching.Engine` (continuous batching); each
gets exactly what it would get alone with its seed. It is off by default because on CPU
it is still slower than one at a time (experiments/serve_bench/results_tiny.md).

Robustness: a bounded queue (429 beyond it), a cap on open connections (503), idle
connections time out, every error is a JSON object naming the problem, request lines are
logged with control bytes escaped, and a client that disconnects frees its slot.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jaxlm import batching, openai_api
from jaxlm.generate import Generator
from jaxlm.request_json import BadRequest, _number, parse_json

MAX_BODY_BYTES = 1 << 20
MAX_STOP_STRINGS, MAX_STOP_CHARS = 8, 200
DEFAULT_MAX_NEW_TOKENS = 64
IDLE_TIMEOUT_S = 30.0  # A connection that sends nothing for this long is closed.
MAX_CONNECTIONS = 256
LISTEN_BACKLOG = 256


class Service:
  """Validates requests and runs them on one `Generator` through a batching engine."""

  FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop")

  def __init__(self, generator: Generator, max_new_tokens: int = 256, info: dict | None = None,
               slots: int = 0, max_queue: int = 64, warmup: bool = False):
    self.gen = generator
    self.max_new_tokens = max_new_tokens
    self.info = info or {}
    self.lock = threading.Lock()
    self.engine = (batching.Engine(generator, slots, max_queue, warmup).start() if slots > 0
                   else None)
    self.max_queue = max_queue
    self.serial_waiting = 0
    self.served = 0  # Completed generations.
    self.responses = 0  # POST answers sent (any status).

  def options(self, body: dict, max_tokens_key: str, n_prompt: int) -> dict:
    """Sampling options shared by both APIs; the default length fits the context."""
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or \
        len(stop) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in stop):
      raise BadRequest(f"'stop' must be a non-empty string or a list of at most "
                       f"{MAX_STOP_STRINGS} non-empty strings of <= {MAX_STOP_CHARS} chars.")
    room = self.gen.max_context - n_prompt
    default = max(1, min(DEFAULT_MAX_NEW_TOKENS, self.max_new_tokens, room))
    opts = {
        "max_new_tokens": _number(body, max_tokens_key, default, 1, self.max_new_tokens, True),
        "temperature": float(_number(body, "temperature", 1.0, 0.0, 100.0)),
        "top_k": _number(body, "top_k", 0, 0, self.gen.cfg.vocab_size, True),
        "top_p": float(_number(body, "top_p", 1.0, 1e-6, 1.0)),
        "seed": _number(body, "seed", 0, 0, 2**31 - 1, True) if body.get("seed") is not None
        else 0,
        "stop": stop,
    }
    mnt = opts["max_new_tokens"]
    if n_prompt + mnt > self.gen.max_context:
      raise BadRequest(f"The prompt is {n_prompt} tokens; with {max_tokens_key}={mnt} at most "
                       f"{max(self.gen.max_context - mnt, 0)} fit the model's context of "
                       f"{self.gen.max_context}. Shorten it or lower {max_tokens_key}.", 413)
    return opts

  def parse(self, raw: bytes) -> dict:
    body = parse_json(raw)
    unknown = sorted(set(body) - set(self.FIELDS))
    if unknown:
      raise BadRequest(f"Unknown field(s) {unknown}; allowed: {list(self.FIELDS)}.")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
      raise BadRequest("'prompt' (a string) is required.")
    ids = [int(t) for t in self.gen.tokenizer.encode(prompt)]
    return {"ids": ids, **self.options(body, "max_new_tokens", len(ids))}

  def run(self, req: dict, alive=None) -> batching.Request:
    """Runs one parsed request to completion (or until `alive()` is False)."""
    r = batching.Request(**req)
    if self.engine is None:  # One at a time, as before continuous batching.
      with self.lock:
        if self.serial_waiting >= self.max_queue:
          raise batching.QueueFull("The server is busy; retry later.")
        self.serial_waiting += 1
      try:
        with self.lock:
          c = self.gen.generate_ids([r.ids], max_new_tokens=r.max_new_tokens,
                                    temperature=r.temperature, top_k=r.top_k, top_p=r.top_p,
                                    seed=r.seed, stop=r.stop)[0]
      finally:
        self.serial_waiting -= 1
      r.text, r.ids_out, r.finish_reason, r.tokens = c.text, c.ids, c.finish_reason, c.ids
      r.first_token_time = time.time()
      r.events.put(None)
      r.done.set()
    else:
      self.engine.submit(r)
      while not r.done.wait(0.05):
        if alive is not None and not alive():
          r.cancel()
          r.done.wait()
          break
    if r.error:
      raise RuntimeError(r.error)
    self.served += 1
    return r

  def generate(self, raw: bytes, alive=None) -> dict:
    req = self.parse(raw)
    t = time.time()
    r = self.run(req, alive)
    return {"completion": r.text, "finish_reason": r.finish_reason,
            "prompt_tokens": len(req["ids"]), "completion_tokens": len(r.ids_out),
            "seconds": round(time.time() - t, 4)}


def _printable(s: str) -> str:
  return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in s)


def make_handler(service: Service):

  class Handler(BaseHTTPRequestHandler):
    timeout = IDLE_TIMEOUT_S  # Socket read timeout: idle keep-alive connections are closed.
    error_content_type = "application/json"

    def _send(self, status: int, obj: dict) -> None:
      data = json.dumps(obj).encode("utf-8")
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      if self.command != "HEAD":
        self.wfile.write(data)

    def send_error(self, code, message=None, explain=None):  # Malformed requests: JSON too.
      self.close_connection = True
      if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
        self.request_version = "HTTP/1.0"  # Unparsable request line: still send headers.
      try:
        self._send(code, {"error": _printable(message or self.responses.get(code, ("",))[0])})
      except OSError:
        pass

    def alive(self) -> bool:
      """False once the client has closed its end (readable with no data)."""
      try:
        r, _, _ = select.select([self.connection], [], [], 0)
        return not r or self.connection.recv(1, socket.MSG_PEEK) != b""
      except (OSError, ValueError):
        return False

    def do_GET(self):  # noqa: N802
      if self.path == "/health":
        busy = service.engine.busy() if service.engine else {"slots": 0}
        return self._send(200, {"status": "ok", "served": service.served, **busy,
                                **service.info})
      if self.path == "/v1/models":
        return self._send(200, openai_api.models(service))
      return self._send(404, {"error": f"No route GET {self.path}; try /health."})

    def do_POST(self):  # noqa: N802
      if self.path not in ("/generate", "/v1/completions"):
        return self._send(404, {"error": f"No route POST {self.path}; try /generate or "
                                         "/v1/completions."})
      try:
        n = int(self.headers.get("Content-Length", ""))
      except ValueError:
        return self._send(411, {"error": "A Content-Length header is required."})
      if n < 0 or n > MAX_BODY_BYTES:
        self.close_connection = True
        return self._send(413, {"error": f"Body of {n} bytes; the limit is {MAX_BODY_BYTES}."})
      raw = self.rfile.read(n)
      try:
        if self.path == "/generate":
          self._send(200, service.generate(raw, self.alive))
        else:
          openai_api.completions(service, raw, self)
      except BadRequest as e:
        self._send(e.status, {"error": str(e)})
      except batching.QueueFull as e:
        self._send(429, {"error": str(e)})
      except ValueError as e:  # From the generator: still the request's fault.
        self._send(400, {"error": str(e)})
      except (BrokenPipeError, ConnectionResetError):
        self.close_connection = True
      except Exception as e:  # noqa: BLE001  Never take the server down.
        self._send(500, {"error": f"{type(e).__name__}: {e}"})
      finally:
        service.responses += 1

    def _method_not_allowed(self):
      self._send(405, {"error": f"{self.command} is not supported; use POST /generate, "
                                "POST /v1/completions or GET /health."})

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _method_not_allowed

    def log_message(self, fmt, *args):
      sys.stderr.write("serve: " + _printable(fmt % args) + "\n")

  return Handler


class Server(ThreadingHTTPServer):
  request_queue_size = LISTEN_BACKLOG
  daemon_threads = True

  def __init__(self, addr, handler, max_connections: int = MAX_CONNECTIONS):
    super().__init__(addr, handler)
    self.open_connections = threading.BoundedSemaphore(max_connections)

  def process_request(self, request, client_address):
    if not self.open_connections.acquire(blocking=False):
      try:  # Over the cap: answer at once and close, without a thread.
        body = json.dumps({"error": "Too many open connections; retry later."}).encode()
        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() +
                        b"\r\n\r\n" + body)
      except OSError:
        pass
      self.shutdown_request(request)
      return
    super().process_request(request, client_address)

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self.open_connections.release()


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8000,
                max_connections: int = MAX_CONNECTIONS):
  server = Server((host, port), make_handler(service), max_connections)
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
  flags.DEFINE_integer("slots", 0, "Requests decoded together (continuous batching); 0 = one "
                       "at a time (the default: faster on CPU so far).", flag_values=f)
  flags.DEFINE_integer("max_queue", 64, "Requests that may wait for a slot; beyond: 429.",
                       flag_values=f)
  flags.DEFINE_integer("max_connections", MAX_CONNECTIONS, "Open connections; beyond: 503.",
                       flag_values=f)
  flags.DEFINE_bool("int8", False, "Serve int8-quantized weights.", flag_values=f)
  flags.DEFINE_bool("warmup", False, "Compile every decode-chunk size before the first request "
                    "(slower start, steadier latency).", flag_values=f)
  flags.DEFINE_integer("max_requests", 0, "Exit after answering this many POST requests "
                       "(0 = never).", flag_values=f)
  f(argv if argv is not None else sys.argv)
  if not f.workdir:
    print("error: --workdir is required.", file=sys.stderr)
    return 2
  if f.slots < 0 or f.max_queue < 1 or f.max_connections < 1:
    print("error: --slots must be >= 0, --max_queue and --max_connections >= 1.", file=sys.stderr)
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
                                            "int8": f.int8, "context": gen.max_context},
                    f.slots, f.max_queue, warmup=f.warmup)
  server = make_server(service, f.host, f.port, f.max_connections)
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
    if service.engine is not None:
      service.engine.stop()
  return 0


if __name__ == "__main__":
  sys.exit(main())
