"""Side by side: wall time to a validation loss, nanoGPT's recipe against jaxlm's (issue #16).

  python -m jaxlm.lab.bench --vs=time_to_loss --rounds=3 \
      --out=experiments/bench/results/vs_time_to_loss.json

Each round runs nanoGPT's own CPU recipe for tiny-shakespeare characters (as
../shared/peers/README.md gives it: eager, 4 x 128, block 64, batch 12, 2,000 iterations,
validation loss every 250 iterations on 20 batches; it ends near 1.886), then jaxlm's
`configs/shakespeare_fast.py` through `python -m jaxlm.lab.bench --mode=time_to_loss`, which
stops at the first evaluation at or below the target on the WHOLE validation split. Both
are fresh subprocesses, timed from their start (imports, data, compile and evaluations
included) by this process.

The peer's figure is its recipe's wall time to its end (the loss it reaches there is
recorded, with the time of every evaluation line and the first at or below the target, if
any); jaxlm's is the wall time of its process, which ends at the target. The ratio is
jaxlm's median over rounds divided by the peer's: below 1 is faster.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import statistics
import sys
import tempfile

from jaxlm.lab import vs

NANOGPT_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)", re.M)
TARGET = 1.88
RECIPE_ITERS = 2000


def peer_side(peers: str, python: str) -> vs.Side:
  """nanoGPT's recipe command, verbatim from ../shared/peers/README.md."""
  argv = [python, "train.py", "config/train_shakespeare_char.py", "--device=cpu",
          "--compile=False", "--eval_iters=20", "--log_interval=10", "--block_size=64",
          "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
          f"--max_iters={RECIPE_ITERS}", f"--lr_decay_iters={RECIPE_ITERS}", "--dropout=0.0",
          "--always_save_checkpoint=False", f"--out_dir={os.path.join(peers, 'ng_full')}"]
  return vs.Side("nanoGPT recipe", argv, os.path.join(peers, "nanogpt"), vs.NANOGPT_ITER)


def jaxlm_side(data_root: str, out_json: str, target: float, extra: list[str]) -> vs.Side:
  """`python -m jaxlm.lab.bench --mode=time_to_loss` on configs/shakespeare_fast.py."""
  argv = [sys.executable, "-m", "jaxlm.lab.bench", "--config=configs/shakespeare_fast.py",
          "--mode=time_to_loss", f"--target_loss={target}",
          f"--config.data.path={os.path.join(data_root, 'tinyshakespeare', 'input.txt')}",
          f"--out={out_json}", *extra]
  return vs.Side("jaxlm", argv, vs.REPO, vs.JAXLM_STEP)


def peer_figure(out: dict, target: float) -> dict:
  """The recipe's wall time, its evaluations (time, step, loss) and the first <= target."""
  evals = [{"step": int(s), "val_loss": float(v), "at_s": round(t, 2)}
           for t, line in out["stamped"] for s, _, v in NANOGPT_EVAL.findall(line)]
  if not evals:
    raise ValueError("no 'step N: train loss X, val loss Y' line in nanoGPT's log: the run "
                     f"failed or its log format changed.\n... {out['log'][-2000:]}")
  first = next((e for e in evals if e["val_loss"] <= target), None)
  return {"wall_s": out["wall_s"], "final_val_loss": evals[-1]["val_loss"],
          "final_step": evals[-1]["step"], "evals": evals,
          "first_at_or_below_target_s": first["at_s"] if first else None}


def jaxlm_figure(out: dict, out_json: str) -> dict:
  """The process's wall time and what `--mode=time_to_loss` wrote (loss, step, its own clock)."""
  with open(out_json) as f:
    r = json.load(f)
  return {"wall_s": out["wall_s"], "reached": r["reached"], "final_val_loss": r["eval_loss"],
          "final_step": r["steps"], "bench_wall_time_s": r["wall_time_s"],
          "tokens_seen": r["tokens_seen"], "history": r["history"]}


def run_vs_ttl(rounds: int, peers: str, data_root: str, target: float = TARGET,
               timeout_s: float = 1800.0, jaxlm_args: list[str] = (), log=print) -> dict:
  """`rounds` rounds of (nanoGPT recipe, jaxlm to `target`); the result dict (JSON)."""
  python = vs.check_peers(os.path.abspath(peers), "nanogpt")
  peers, data_root = os.path.abspath(peers), os.path.abspath(data_root)
  if not os.path.exists(os.path.join(data_root, "tinyshakespeare", "input.txt")):
    raise vs.PeersMissing(f"{data_root}/tinyshakespeare/input.txt is missing. Fix: pass "
                          "--data_root=DIR (the shared data folder, ../shared/data).")
  started = datetime.datetime.now(datetime.timezone.utc)
  result = {"vs": "time_to_loss", "target_loss": target,
            "date": started.isoformat(timespec="seconds"), "machine": vs.machine(),
            "versions": vs._versions(python), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "method": __doc__.split("\n\n", 2)[2].strip(), "rounds": []}
  for r in range(rounds):
    entry = {"round": r + 1}
    with tempfile.TemporaryDirectory(prefix="jaxlm_vs_ttl_") as tmp:
      out_json = os.path.join(tmp, "time_to_loss.json")
      for side in (peer_side(peers, python),
                   jaxlm_side(data_root, out_json, target, list(jaxlm_args))):
        log(f"round {r + 1}/{rounds}: {side.name} ...")
        out = vs.run_side(side, steps=0, budget_s=float("inf"), timeout_s=timeout_s)
        fig = peer_figure(out, target) if side.name != "jaxlm" else jaxlm_figure(out, out_json)
        entry["jaxlm" if side.name == "jaxlm" else "peer"] = {
            **fig, "command": side.command, "cpu_s": out["cpu_s"],
            "loadavg_start": out["loadavg_start"]}
        log(f"  {fig['wall_s']:.1f} s to validation loss {fig['final_val_loss']:.3f} "
            f"(load {out['loadavg_start'][0]:.1f})")
    result["rounds"].append(entry)
  peer = [e["peer"]["wall_s"] for e in result["rounds"]]
  ours = [e["jaxlm"]["wall_s"] for e in result["rounds"]]
  result.update({"peer_wall_s": peer, "jaxlm_wall_s": ours,
                 "peer_median_s": statistics.median(peer),
                 "jaxlm_median_s": statistics.median(ours),
                 "ratio": statistics.median(ours) / statistics.median(peer),
                 "jaxlm_reached_every_round": all(e["jaxlm"]["reached"]
                                                  for e in result["rounds"]),
                 "commands": {k: result["rounds"][0][k]["command"] for k in ("peer", "jaxlm")}})
  return vs.finish(result)


def print_summary(result: dict) -> None:
  print(f"time to validation loss {result['target_loss']}: jaxlm vs nanoGPT's recipe "
        f"({result['machine']['cpu_model']}, {result['machine']['logical_cpus']} CPUs)")
  for e in result["rounds"]:
    print(f"  round {e['round']}: nanoGPT {e['peer']['wall_s']:6.1f} s "
          f"(loss {e['peer']['final_val_loss']:.3f})  jaxlm {e['jaxlm']['wall_s']:6.1f} s "
          f"(loss {e['jaxlm']['final_val_loss']:.3f})")
  print(f"  median:  nanoGPT {result['peer_median_s']:6.1f} s  jaxlm "
        f"{result['jaxlm_median_s']:6.1f} s  ratio {result['ratio']:.2f}x")
