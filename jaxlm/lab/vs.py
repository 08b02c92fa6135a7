"""Side by side: jaxlm against a peer program, on the same machine, in the same run (issue #16).

  python -m jaxlm.lab.bench --vs=nanogpt --rounds=3 --out=experiments/bench/results/vs_nanogpt.json
  python -m jaxlm.lab.bench --vs=lstm --rounds=3 --out=experiments/bench/results/vs_lstm.json

The peers are unchanged public programs set up by `bash ../shared/peers/setup.sh /tmp/peers`
(`--peers`). Each round runs the peer, then jaxlm's main CLI (`python -m jaxlm.main`), each as
a fresh subprocess at the same shape, so both see the same machine load within minutes.

* `nanogpt`: nanoGPT (`torch.compile`) at its CPU shape (4 x 128, 4 heads, block 64, batch
  12, dropout 0) on tiny-shakespeare chars, against `configs/shakespeare_char.py` with the
  README's CPU switches (`cpu_devices` = one per core, `model.fused_qkv`).
* `lstm`: PyTorch's word_language_model at Zaremba's small shape (2 x 200 LSTM, BPTT 35,
  batch 20, dropout 0, SGD) on PTB, against `configs/ptb.py:lstm_small` with `seq_len=35`
  (`carry_state` as the recipe sets it).

tokens/s of each side is its steady state: the first `WARMUP` iterations (compile, caches)
are left out, and the figure is the median over what follows: nanoGPT's per-iteration
"time X ms" lines (batch * block / X), word_language_model's per-interval "ms/batch X" lines
(batch * bptt / X), jaxlm's per-interval `tokens_per_sec` rows of `<workdir>/metrics.jsonl`.
A side stops after `steps` iterations, or once `budget_s` has passed and it has at least
`MIN_SAMPLES` iterations past the warm-up. The ratio is jaxlm's median over rounds divided
by the peer's.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import jaxlm

WARMUP = 20  # Iterations left out of every side's figure (compile, first allocations).
LOG_EVERY = 10  # Interval of word_language_model's and jaxlm's tokens/s lines, in iterations.
MIN_SAMPLES = 30  # Iterations past the warm-up before a side may stop on its time budget.
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
# Shapes and per-round iteration counts of each comparison.
KINDS = {
    "nanogpt": {"batch": 12, "seq_len": 64, "layers": 4, "heads": 4, "width": 128,
                "steps": 300, "data": "tinyshakespeare/input.txt"},
    "lstm": {"batch": 20, "seq_len": 35, "layers": 2, "width": 200, "steps": 160,
             "data": "ptb/ptb.train.txt"},
}
NANOGPT_ITER = re.compile(r"^iter (\d+): loss \S+, time ([\d.]+)ms", re.M)
WLM_BATCH = re.compile(r"\|\s*(\d+)/\s*\d+ batches \|.*?ms/batch\s+([\d.]+)", re.M)
JAXLM_STEP = re.compile(r"\bstep (\d+)/\d+ ")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(jaxlm.__file__)))  # jaxlm's sides run here.


class PeersMissing(RuntimeError):
  """The peer programs are not set up where `--peers` points."""


def _median_after(samples: list[tuple[int, float]], warmup: int, what: str) -> tuple[float, int]:
  kept = [v for i, v in samples if i > warmup]
  if not kept:
    raise ValueError(f"no {what} after the first {warmup} iterations (found {len(samples)} "
                     "in all): the side stopped too early or its log format changed.")
  return statistics.median(kept), len(kept)


def nanogpt_figure(log: str, tokens_per_iter: int, warmup: int = WARMUP) -> dict:
  """tokens/s from nanoGPT's "iter N: loss L, time X ms" lines: iterations N >= warmup.

  Iteration N's time covers its own step (iteration 0 adds compile and the first eval), so
  iterations 0 .. warmup-1 are left out.
  """
  samples = [(int(n) + 1, float(ms)) for n, ms in NANOGPT_ITER.findall(log)]
  ms, n = _median_after(samples, warmup, "'iter N: ... time X ms' line")
  return {"tokens_per_s": tokens_per_iter * 1000.0 / ms, "median_ms": ms, "samples": n,
          "unit": "iteration"}


def wlm_figure(log: str, tokens_per_batch: int, warmup: int = WARMUP) -> dict:
  """tokens/s from word_language_model's "| N/ M batches | ... ms/batch X" lines.

  Each line averages the batches since the previous one; the first also counts batch 0,
  so lines up to batch `warmup` are left out.
  """
  samples = [(int(b), float(ms)) for b, ms in WLM_BATCH.findall(log)]
  ms, n = _median_after(samples, warmup, "'N/ M batches ... ms/batch X' line")
  return {"tokens_per_s": tokens_per_batch * 1000.0 / ms, "median_ms": ms, "samples": n,
          "unit": f"interval of {LOG_EVERY} batches"}


def jaxlm_figure(metrics_jsonl: str, warmup: int = WARMUP) -> dict:
  """tokens/s from the `tokens_per_sec` rows of jaxlm's metrics.jsonl, past the warm-up.

  A row at step S covers the steps since the previous row; the first covers compile. Rows
  whose interval starts before step `warmup` are left out (evaluation rows have no
  `tokens_per_sec`; the loop excludes evaluation time from the next interval).
  """
  samples, prev = [], 0
  for line in metrics_jsonl.splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:  # Empty, or cut short by a kill mid-write.
      continue
    if "tokens_per_sec" in row:
      # Keyed by the interval's first step, so `> warmup` keeps intervals from warmup on.
      samples.append((prev + 1, float(row["tokens_per_sec"])))
      prev = int(row["step"])
  tps, n = _median_after(samples, warmup, "metrics.jsonl tokens_per_sec row")
  return {"tokens_per_s": tps, "samples": n, "unit": "log interval (metrics.jsonl row)"}


def summarize(rounds: list[dict]) -> dict:
  """Medians over rounds of each side's tokens/s, and jaxlm's / the peer's."""
  peer = [r["peer"]["tokens_per_s"] for r in rounds]
  ours = [r["jaxlm"]["tokens_per_s"] for r in rounds]
  return {"peer_tokens_per_s": peer, "jaxlm_tokens_per_s": ours,
          "peer_median": statistics.median(peer), "jaxlm_median": statistics.median(ours),
          "ratio": statistics.median(ours) / statistics.median(peer),
          "round_ratios": [o / p for o, p in zip(ours, peer, strict=True)]}


def cpu_info(text: str) -> dict:
  """CPU model and the SIMD/matrix flags of interest from /proc/cpuinfo's text."""
  model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
  flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
  present = set(flags.group(1).split()) if flags else set()
  return {"cpu_model": model.group(1).strip() if model else platform.processor(),
          "cpu_flags": [f for f in CPU_FLAGS if f in present], "avx512f": "avx512f" in present}


def machine(cpuinfo: str = "/proc/cpuinfo") -> dict:
  """The machine a comparison ran on: CPU model and flags, cores, load (1, 5, 15 minutes)."""
  try:
    with open(cpuinfo) as f:
      info = cpu_info(f.read())
  except OSError:
    info = cpu_info("")
  usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {**info, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
          "hostname": platform.node(), "loadavg_before": list(os.getloadavg())}


def check_peers(peers: str, kind: str) -> str:
  """The peers' python; raises PeersMissing (naming setup.sh) when something is absent."""
  need = {"nanogpt": ["nanogpt/train.py", "nanogpt/data/shakespeare_char/train.bin"],
          "lstm": ["word_language_model/main.py", "ptb/train.txt"]}[kind]
  python = os.path.join(peers, "venv", "bin", "python")
  missing = [p for p in [python] + [os.path.join(peers, n) for n in need] if not os.path.exists(p)]
  if missing:
    raise PeersMissing(f"the peers are not set up under {peers} (missing {', '.join(missing)}). "
                       f"Fix: bash ../shared/peers/setup.sh {peers} (about a minute), or pass "
                       "--peers=DIR where it was run.")
  return python


@dataclasses.dataclass(frozen=True)
class Side:
  """One program of a comparison: how to run it and where its iteration count shows."""
  name: str
  argv: list[str]
  cwd: str
  progress: re.Pattern  # Group 1: the iteration a log line reports.
  capped: bool = True  # Stops by itself after `steps` (else: stopped once its log reaches it).
  workdir: str = ""  # jaxlm: the run's workdir (metrics.jsonl).

  @property
  def command(self) -> str:
    return f"cd {shlex.quote(self.cwd)} && {shlex.join(self.argv)}"


def peer_side(kind: str, peers: str, python: str, steps: int) -> Side:
  """The peer's command as ../shared/peers/README.md gives it, for `steps` iterations."""
  if kind == "nanogpt":
    s = KINDS[kind]
    argv = [python, "train.py", "config/train_shakespeare_char.py", "--device=cpu",
            "--compile=True", "--eval_iters=1", "--eval_interval=100000", "--log_interval=1",
            f"--block_size={s['seq_len']}", f"--batch_size={s['batch']}",
            f"--n_layer={s['layers']}", f"--n_head={s['heads']}", f"--n_embd={s['width']}",
            f"--max_iters={steps}", "--lr_decay_iters=2000", "--dropout=0.0",
            "--always_save_checkpoint=False", f"--out_dir={os.path.join(peers, 'ng')}"]
    return Side("nanoGPT", argv, os.path.join(peers, "nanogpt"), NANOGPT_ITER)
  argv = [python, "main.py", "--data", os.path.join(peers, "ptb"), "--emsize", "200", "--nhid",
          "200", "--nlayers", "2", "--dropout", "0", "--bptt", "35", "--batch_size", "20",
          "--lr", "20", "--clip", "0.25", "--epochs", "1", "--log-interval", str(LOG_EVERY),
          "--save", os.path.join(peers, "wlm_model.pt")]
  return Side("word_language_model", argv, os.path.join(peers, "word_language_model"),
              WLM_BATCH, capped=False)  # One epoch is 1,327 batches: stopped at `steps`.


def jaxlm_side(kind: str, data_root: str, steps: int, workdir: str, extra: list[str]) -> Side:
  """`python -m jaxlm.main` at the kind's shape for `steps` steps, tokens/s every LOG_EVERY."""
  common = [f"--workdir={workdir}", f"--config.num_train_steps={steps}",
            f"--config.log_every_steps={LOG_EVERY}", f"--config.eval_every_steps={steps}",
            "--config.eval_steps=1", f"--config.checkpoint_every_steps={steps}",
            "--config.sample.num_tokens=0"]
  if kind == "nanogpt":
    s = KINDS[kind]
    cores = os.cpu_count() or 1
    devices = max(d for d in range(1, cores + 1) if s["batch"] % d == 0)
    argv = ["--config=configs/shakespeare_char.py",
            f"--config.data.path={os.path.join(data_root, s['data'])}",
            f"--config.cpu_devices={devices}", "--config.model.fused_qkv=True"]
  else:
    argv = ["--config=configs/ptb.py:lstm_small",
            f"--config.data.path={os.path.join(data_root, 'ptb', 'ptb.train.txt')}",
            f"--config.data.eval_path={os.path.join(data_root, 'ptb', 'ptb.valid.txt')}",
            f"--config.data.seq_len={KINDS[kind]['seq_len']}"]
  return Side("jaxlm", [sys.executable, "-m", "jaxlm.main"] + argv + common + extra, REPO,
              JAXLM_STEP, workdir=workdir)


def run_side(side: Side, steps: int, budget_s: float, timeout_s: float) -> dict:
  """Runs `side` to its end, or stops it (SIGTERM; jaxlm saves and exits) at `steps` when
  it is not capped, or past `budget_s` once it has MIN_SAMPLES iterations past the warm-up.

  Returns its output (also as (seconds since start, line) pairs), wall and CPU seconds, and
  the load when it started.
  """
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  load, cpu0, t0 = list(os.getloadavg()), resource.getrusage(resource.RUSAGE_CHILDREN), \
      time.time()
  proc = subprocess.Popen(side.argv, cwd=side.cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  killer = threading.Timer(timeout_s, proc.kill)
  killer.start()
  stamped, stopped = [], ""
  try:
    for line in proc.stdout:
      stamped.append((time.time() - t0, line))
      m = side.progress.search(line)
      it = int(m.group(1)) if m else 0
      if not stopped and not side.capped and it >= steps:
        stopped = f"at iteration {it}"
      elif not stopped and time.time() - t0 > budget_s and it >= WARMUP + MIN_SAMPLES:
        stopped = f"at iteration {it}, past the {budget_s:.0f} s budget"
      if stopped and proc.poll() is None:
        proc.terminate()
    rc = proc.wait()
  finally:
    killer.cancel()
    if proc.poll() is None:
      proc.kill()
  cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
  log = "".join(line for _, line in stamped)
  if rc != 0 and not stopped:
    why = "timed out" if time.time() - t0 >= timeout_s else f"exited {rc}"
    raise RuntimeError(f"{side.name} {why}: {side.command}\n... {log[-3000:]}")
  return {"log": log, "stamped": stamped, "wall_s": time.time() - t0, "loadavg_start": load,
          "stopped": stopped,
          "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)}


def _figure(kind: str, side: Side, out: dict) -> dict:
  s = KINDS[kind]
  tokens = s["batch"] * s["seq_len"]
  if side.name == "jaxlm":
    with open(os.path.join(side.workdir, "metrics.jsonl")) as f:
      fig = jaxlm_figure(f.read())
  elif kind == "nanogpt":
    fig = nanogpt_figure(out["log"], tokens)
  else:
    fig = wlm_figure(out["log"], tokens)
  return {**fig, "command": side.command, "wall_s": out["wall_s"], "cpu_s": out["cpu_s"],
          "loadavg_start": out["loadavg_start"], "stopped": out["stopped"] or "ran to its end"}


def _versions(peer_python: str) -> dict:
  got = subprocess.run([peer_python, "-c", "import torch; print(torch.__version__, "
                        "torch.get_num_threads())"], capture_output=True, text=True, check=False)
  torch_v, threads = (got.stdout.split() + ["?", "?"])[:2]
  return {"python": platform.python_version(), "jax": importlib.metadata.version("jax"),
          "torch": torch_v, "torch_threads": threads}


def run_vs(kind: str, rounds: int, peers: str, data_root: str, steps: int = 0,
           budget_s: float = 90.0, timeout_s: float = 1200.0, jaxlm_args: list[str] = (),
           log=print) -> dict:
  """`rounds` rounds of (peer, jaxlm) at `kind`'s shape; the result dict written as JSON."""
  if kind not in KINDS:
    raise ValueError(f"--vs={kind!r}: choose one of {sorted(KINDS)}.")
  python = check_peers(os.path.abspath(peers), kind)
  peers, data_root = os.path.abspath(peers), os.path.abspath(data_root)
  if not os.path.exists(os.path.join(data_root, KINDS[kind]["data"])):
    raise PeersMissing(f"{os.path.join(data_root, KINDS[kind]['data'])} is missing. Fix: pass "
                       "--data_root=DIR (the shared data folder, ../shared/data).")
  steps = steps or KINDS[kind]["steps"]
  started = datetime.datetime.now(datetime.timezone.utc)
  result = {"vs": kind, "peer_program": peer_side(kind, peers, python, steps).name,
            "date": started.isoformat(timespec="seconds"), "shape": KINDS[kind],
            "steps_per_side": steps, "warmup_iterations": WARMUP, "machine": machine(),
            "versions": _versions(python), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "method": __doc__.split("tokens/s of each side", 1)[1].strip()}
  result["rounds"] = []
  for r in range(rounds):
    entry = {"round": r + 1}
    with tempfile.TemporaryDirectory(prefix="jaxlm_vs_") as workdir:
      for side in (peer_side(kind, peers, python, steps),
                   jaxlm_side(kind, data_root, steps, workdir, list(jaxlm_args))):
        log(f"round {r + 1}/{rounds}: {side.name} ...")
        entry["peer" if side.name != "jaxlm" else "jaxlm"] = fig = _figure(
            kind, side, run_side(side, steps, budget_s, timeout_s))
        log(f"  {fig['tokens_per_s']:,.0f} tokens/s ({fig['samples']} samples, "
            f"{fig['wall_s']:.0f} s, load {fig['loadavg_start'][0]:.1f})")
    result["rounds"].append(entry)
  result.update(summarize(result["rounds"]))
  result["commands"] = {k: result["rounds"][0][k]["command"] for k in ("peer", "jaxlm")}
  return finish(result)


def finish(result: dict) -> dict:
  """A comparison's result with the load after it and its end time."""
  result["machine"]["loadavg_after"] = list(os.getloadavg())
  result["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")
  return result


def print_summary(result: dict) -> None:
  """One line per round and the medians."""
  print(f"jaxlm vs {result['vs']} ({result['machine']['cpu_model']}, "
        f"{result['machine']['logical_cpus']} CPUs)")
  for e in result["rounds"]:
    print(f"  round {e['round']}: peer {e['peer']['tokens_per_s']:>9,.0f}  jaxlm "
          f"{e['jaxlm']['tokens_per_s']:>9,.0f} tokens/s")
  print(f"  median:  peer {result['peer_median']:>9,.0f}  jaxlm {result['jaxlm_median']:>9,.0f}"
        f"  ratio {result['ratio']:.2f}x")
