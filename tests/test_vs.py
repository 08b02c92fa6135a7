"""The side-by-side bench (jaxlm/lab/vs.py): log parsers, medians and ratio, the JSON, errors.

No peer program runs here (no torch needed): the parsers read captured log text, and the
runner is exercised with small python scripts standing in for the programs.
"""

import json
import os
import re
import statistics
import subprocess
import sys

import pytest
from conftest import REPO, cpu_env

from jaxlm.lab import vs

# nanoGPT's train.py prints this (log_interval=1): iteration 0 adds compile and the first eval.
NANOGPT_LOG = "\n".join(
    ["compiling the model... (takes a ~minute)", "step 0: train loss 4.1719, val loss 4.1663",
     "iter 0: loss 4.1828, time 93333.31ms, mfu -100.00%"]
    + [f"iter {i}: loss 3.9000, time {400.0 + i:.2f}ms, mfu 0.00%" for i in range(1, 20)]
    + [f"iter {i}: loss 2.5000, time {70.0 + (i % 5):.2f}ms, mfu 1.20%" for i in range(20, 61)])

WLM_FORMAT = ("| epoch {:3d} | {:5d}/{:5d} batches | lr {:02.2f} | ms/batch {:5.2f} | "
              "loss {:5.2f} | ppl {:8.2f}")  # word_language_model/main.py's line, verbatim.
WLM_LOG = "\n".join(
    ["Using device: cpu"]
    + [WLM_FORMAT.format(1, b, 1327, 20.0, ms, 6.5, 665.1)
       for b, ms in [(10, 900.0), (20, 500.0), (30, 160.0), (40, 170.0), (50, 150.0),
                     (60, 165.0)]]
    + ["-" * 89, "| end of epoch   1 | time: 250.00s | valid loss  5.60 | valid ppl   270.43"])


def jaxlm_metrics(rates: dict[int, float]) -> str:
  """metrics.jsonl as the training loop writes it: train rows, an eval row, a cut-off line."""
  rows = [json.dumps({"step": s, "train_loss": 3.0, "tokens_per_sec": r, "mfu": 0.2})
          for s, r in rates.items()]
  last = max(rates)
  rows.append(json.dumps({"step": last, "eval_loss": 2.7, "eval_tokens": 768.0}))
  return "\n".join(rows) + '\n{"step": 999, "tokens_per'  # A kill mid-write.


def test_nanogpt_parser_uses_iterations_after_the_warmup():
  fig = vs.nanogpt_figure(NANOGPT_LOG, tokens_per_iter=768)
  steady = [70.0 + (i % 5) for i in range(20, 61)]
  assert fig["samples"] == 41 and fig["median_ms"] == statistics.median(steady) == 72.0
  assert fig["tokens_per_s"] == pytest.approx(768_000 / 72.0)
  # Negative control: counting the warm-up would move the median (so the test can fail).
  with_warmup = vs.nanogpt_figure(NANOGPT_LOG, 768, warmup=0)
  assert with_warmup["samples"] == 61 and with_warmup["median_ms"] != 72.0


def test_wlm_parser_reads_ms_per_batch_past_the_first_interval():
  fig = vs.wlm_figure(WLM_LOG, tokens_per_batch=20 * 35)
  assert fig["samples"] == 4  # Batches 30..60; the end-of-epoch line is not a sample.
  assert fig["median_ms"] == statistics.median([160.0, 170.0, 150.0, 165.0]) == 162.5
  assert fig["tokens_per_s"] == pytest.approx(700 / 0.1625)
  assert vs.wlm_figure(WLM_LOG, 700, warmup=0)["median_ms"] != 162.5  # Negative control.


def test_jaxlm_parser_skips_the_compile_interval_and_eval_rows():
  text = jaxlm_metrics({10: 590.0, 20: 6100.0, 30: 10500.0, 40: 11000.0, 50: 10800.0})
  fig = vs.jaxlm_figure(text)
  assert fig["samples"] == 3 and fig["tokens_per_s"] == 10800.0  # Steps 21-50.
  assert vs.jaxlm_figure(text, warmup=0)["tokens_per_s"] != 10800.0  # Negative control.


@pytest.mark.parametrize("parse", [lambda t: vs.nanogpt_figure(t, 768),
                                   lambda t: vs.wlm_figure(t, 700), vs.jaxlm_figure])
def test_parsers_refuse_a_log_without_steady_state_samples(parse):
  short = "iter 0: loss 4.1, time 9000.00ms, mfu -100.00%\n" + WLM_FORMAT.format(
      1, 10, 1327, 20.0, 900.0, 6.5, 665.1) + "\n" + json.dumps(
      {"step": 10, "tokens_per_sec": 500.0})
  with pytest.raises(ValueError, match="after the first 20 iterations"):
    parse(short)


def test_summary_is_medians_over_rounds_and_their_ratio():
  rounds = [{"peer": {"tokens_per_s": p}, "jaxlm": {"tokens_per_s": j}}
            for p, j in [(10000.0, 11000.0), (12000.0, 9000.0), (11000.0, 16500.0)]]
  s = vs.summarize(rounds)
  assert s["peer_median"] == 11000.0 and s["jaxlm_median"] == 11000.0 and s["ratio"] == 1.0
  assert s["round_ratios"] == pytest.approx([1.1, 0.75, 1.5])
  assert s["peer_tokens_per_s"] == [10000.0, 12000.0, 11000.0]


def test_cpu_info_reads_model_and_flags():
  text = ("processor\t: 0\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n"
          "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 other\n\n"
          "processor\t: 1\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n")
  info = vs.cpu_info(text)
  assert info["cpu_model"] == "AMD EPYC 9R14 96-Core Processor" and info["avx512f"]
  assert info["cpu_flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16"]
  assert not vs.cpu_info(text.replace(" avx512f avx512_bf16", ""))["avx512f"]
  m = vs.machine()
  assert m["logical_cpus"] >= 1 and len(m["loadavg_before"]) == 3


def make_peers(root, kind: str) -> None:
  need = {"nanogpt": ["nanogpt/train.py", "nanogpt/data/shakespeare_char/train.bin"],
          "lstm": ["word_language_model/main.py", "ptb/train.txt"]}[kind]
  for rel in ["venv/bin/python"] + need:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text("")


def nanogpt_peers_and_data(root):
  """Stand-in peer files and a tiny-shakespeare file: (peers dir, data root)."""
  peers, data = root / "peers", root / "data"
  make_peers(peers, "nanogpt")
  (data / "tinyshakespeare").mkdir(parents=True)
  (data / "tinyshakespeare" / "input.txt").write_text("x")
  return peers, data


def test_missing_peers_name_setup_sh(tmp_path):
  with pytest.raises(vs.PeersMissing, match=r"setup\.sh .*peers") as e:
    vs.check_peers(str(tmp_path / "peers"), "nanogpt")
  assert "nanogpt/train.py" in str(e.value)
  make_peers(tmp_path / "peers", "lstm")
  assert vs.check_peers(str(tmp_path / "peers"), "lstm").endswith("venv/bin/python")
  with pytest.raises(vs.PeersMissing, match="train.bin"):  # The other peer is still absent.
    vs.check_peers(str(tmp_path / "peers"), "nanogpt")


def test_cli_missing_peers_is_an_error_naming_setup_sh(tmp_path):
  got = subprocess.run([sys.executable, "-m", "jaxlm.lab.bench", "--vs=nanogpt",
                        f"--peers={tmp_path}"], cwd=REPO, env=cpu_env(1), capture_output=True,
                       text=True, timeout=300)
  assert got.returncode == 1 and "setup.sh" in got.stderr and str(tmp_path) in got.stderr


def script_side(code: str, capped: bool = True) -> vs.Side:
  return vs.Side("fake", [sys.executable, "-c", code], REPO, vs.NANOGPT_ITER, capped=capped)


FOREVER = ("import itertools, time\nfor i in itertools.count():\n"
           "  print(f'iter {i}: loss 1.0, time 1.00ms, mfu 0.00%', flush=True); time.sleep(0.001)")


def test_run_side_stops_an_uncapped_program_at_steps_and_reports_failures():
  out = vs.run_side(script_side(FOREVER, capped=False), steps=25, budget_s=1e9, timeout_s=60)
  assert out["stopped"] == "at iteration 25" and "iter 25:" in out["log"]
  assert out["wall_s"] > 0 and out["cpu_s"] >= 0 and len(out["loadavg_start"]) == 3
  # Past the budget: stopped once there are MIN_SAMPLES iterations after the warm-up.
  out = vs.run_side(script_side(FOREVER), steps=10**9, budget_s=0.0, timeout_s=60)
  assert out["stopped"].startswith(f"at iteration {vs.WARMUP + vs.MIN_SAMPLES},")
  with pytest.raises(RuntimeError, match="fake exited 3"):
    vs.run_side(script_side("print('boom'); raise SystemExit(3)"), 10, 1e9, 60)


def test_run_vs_interleaves_rounds_and_writes_every_field(tmp_path, monkeypatch):
  peers, data = nanogpt_peers_and_data(tmp_path)
  order = []

  def fake_run_side(side, steps, budget_s, timeout_s):
    order.append(side.name)
    n = len(order)
    if side.name == "jaxlm":
      with open(os.path.join(side.workdir, "metrics.jsonl"), "w") as f:
        f.write(jaxlm_metrics({10: 500.0, 20: 5000.0, 30: 9000.0 + n, 40: 9000.0 + n}))
      log = ""
    else:
      log = NANOGPT_LOG.replace("time 72.00ms", f"time {72.0 + n:.2f}ms")
    return {"log": log, "wall_s": 1.0, "cpu_s": 1.0, "loadavg_start": [1.0, 1.0, 1.0],
            "stopped": ""}

  monkeypatch.setattr(vs, "run_side", fake_run_side)
  monkeypatch.setattr(vs, "_versions", lambda python: {"torch": "test"})
  r = vs.run_vs("nanogpt", 3, str(peers), str(data), steps=60, log=lambda *a: None)
  assert order == ["nanoGPT", "jaxlm"] * 3  # Peer first, then jaxlm, every round.
  assert [e["round"] for e in r["rounds"]] == [1, 2, 3]
  assert r["jaxlm_tokens_per_s"] == [9002.0, 9004.0, 9006.0]
  assert r["ratio"] == pytest.approx(r["jaxlm_median"] / r["peer_median"])
  m = r["machine"]
  for key in ("cpu_model", "cpu_flags", "avx512f", "logical_cpus", "loadavg_before",
              "loadavg_after"):
    assert key in m
  assert re.match(r"\d{4}-\d\d-\d\dT", r["date"]) and r["finished"] >= r["date"]
  assert "train.py config/train_shakespeare_char.py" in r["commands"]["peer"]
  assert "--max_iters=60" in r["commands"]["peer"] and "--compile=True" in r["commands"]["peer"]
  jx = r["commands"]["jaxlm"]
  assert "-m jaxlm.main --config=configs/shakespeare_char.py" in jx
  assert "--config.model.fused_qkv=True" in jx and "--config.num_train_steps=60" in jx
  assert r["rounds"][0]["peer"]["command"] == r["commands"]["peer"]
  assert r["rounds"][0]["peer"]["stopped"] == "ran to its end"
  json.dumps(r)  # Everything is JSON.


# ------------------------------------------------- time to a validation loss (jaxlm/lab/vs_ttl.py)


def test_time_to_loss_side_by_side_interleaves_and_reads_both_sides(tmp_path, monkeypatch):
  from jaxlm.lab import vs_ttl

  peers, data = nanogpt_peers_and_data(tmp_path)
  order = []
  evals = [(0, 4.17), (250, 2.4), (1750, 1.879), (2000, 1.886)]  # Dips below 1.88 once.

  def fake_run_side(side, steps, budget_s, timeout_s):
    order.append(side.name)
    if side.name == "jaxlm":
      out_json = side.argv[[a.startswith("--out=") for a in side.argv].index(True)][6:]
      with open(out_json, "w") as f:
        json.dump({"reached": True, "eval_loss": 1.874, "steps": 900, "wall_time_s": 50.0,
                   "tokens_seen": 921600, "history": [[900, 1.874]]}, f)
      stamped, wall = [(1.0, "bench output\n")], 60.0 + len(order)
    else:
      stamped = [(10.0 * i, f"step {s}: train loss 2.0, val loss {v}\n")
                 for i, (s, v) in enumerate(evals)]
      wall = 150.0 + len(order)
    return {"log": "".join(line for _, line in stamped), "stamped": stamped, "wall_s": wall,
            "cpu_s": 1.0, "loadavg_start": [1.0, 1.0, 1.0], "stopped": ""}

  monkeypatch.setattr(vs, "run_side", fake_run_side)
  monkeypatch.setattr(vs, "_versions", lambda python: {"torch": "test"})
  r = vs_ttl.run_vs_ttl(2, str(peers), str(data), target=1.88, log=lambda *a: None)
  assert order == ["nanoGPT recipe", "jaxlm"] * 2
  assert r["peer_wall_s"] == [151.0, 153.0] and r["jaxlm_wall_s"] == [62.0, 64.0]
  assert r["ratio"] == pytest.approx(63.0 / 152.0) and r["jaxlm_reached_every_round"]
  peer = r["rounds"][0]["peer"]
  assert peer["final_val_loss"] == 1.886 and peer["final_step"] == 2000
  assert peer["first_at_or_below_target_s"] == 20.0  # The 1.879 line, not the final one.
  assert "--compile=False" in r["commands"]["peer"] and "--max_iters=2000" in r["commands"]["peer"]
  assert "--mode=time_to_loss" in r["commands"]["jaxlm"]
  assert "configs/shakespeare_fast.py" in r["commands"]["jaxlm"]
  assert r["rounds"][1]["jaxlm"]["bench_wall_time_s"] == 50.0
  json.dumps(r)
  # A target below every evaluation: no first time, and the figure is still the recipe's end.
  r = vs_ttl.run_vs_ttl(1, str(peers), str(data), target=1.5, log=lambda *a: None)
  assert r["rounds"][0]["peer"]["first_at_or_below_target_s"] is None


def test_time_to_loss_peer_without_eval_lines_is_an_error():
  from jaxlm.lab import vs_ttl

  with pytest.raises(ValueError, match="val loss"):
    vs_ttl.peer_figure({"stamped": [(1.0, "Traceback ...\n")], "log": "Traceback ...",
                        "wall_s": 2.0}, 1.88)


def test_run_side_stamps_every_line_with_its_time():
  out = vs.run_side(script_side("import time\nprint('a', flush=True)\ntime.sleep(0.3)\n"
                                "print('b', flush=True)"), 10, 1e9, 60)
  (ta, la), (tb, lb) = out["stamped"]
  assert (la, lb) == ("a\n", "b\n") and tb - ta >= 0.25
