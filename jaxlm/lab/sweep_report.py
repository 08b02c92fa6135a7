"""A sweep's report: results table (markdown + CSV) and PNG plots from its workdirs.

Everything is read back from the run workdirs (`metrics.jsonl`, the trainer's
log, the sweep's attempt records), so `python -m jaxlm.lab.sweep EXP --report`
can rebuild the report at any time, also while runs are still going.

Values are the mean ± sample standard deviation over seeds; "final" is the last
evaluation of a run, "best" the best evaluation along the way.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Sequence

import numpy as np

from jaxlm.lab import plots
from jaxlm.lab import sweep_spec as sweep_lib
from jaxlm.lab.sweep_plots import write_plots
from jaxlm.lab.sweep_spec import key_value, table_keys

SESSIONS_FILE = "sweep_sessions.jsonl"
MARK_BEGIN, MARK_END = "<!-- sweep-results -->", "<!-- /sweep-results -->"


# ----------------------------------------------------------------------------- collection


def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
  return plots.curves_from_metrics(rows, key)


def collect_run(sweep: sweep_lib.Sweep, out: str, spec: sweep_lib.RunSpec) -> dict:
  """One run's numbers, read from its workdir."""
  wd = os.path.join(out, "runs", spec.name)
  path = os.path.join(wd, "metrics.jsonl")
  rows = plots.read_metrics_jsonl(path) if os.path.exists(path) else []
  done = sweep_lib.read_json(os.path.join(wd, sweep_lib.DONE_FILE)) or {}
  status = done.get("status") or ("partial" if rows else "missing")
  if status == "stopped":
    status = f"stopped@{done.get('stopped_at')}"
  r: dict = {"name": spec.name, "group": spec.group, "overrides": spec.overrides,
             "variant": spec.variant, "spec": spec, "status": status,
             "curve": _series(rows, "eval_loss"),
             "steps": max((int(x.get("step", 0)) for x in rows), default=0)}
  for key in dict.fromkeys([sweep.metric, "eval_loss", "eval_ppl", *sweep.columns]):
    s = _series(rows, key)
    r[f"final:{key}"] = s[-1][1] if s else math.nan
  metric = _series(rows, sweep.metric)
  pick = min if sweep.goal == "min" else max
  r[f"best:{sweep.metric}"] = pick(v for _, v in metric) if metric else math.nan
  r["metric_series"] = metric
  tps = [v for _, v in _series(rows, "tokens_per_sec")]
  r["tokens_per_sec"] = float(np.median(tps[1:] if len(tps) > 1 else tps)) if tps else math.nan
  attempts = []
  if os.path.exists(os.path.join(wd, sweep_lib.ATTEMPTS_FILE)):
    with open(os.path.join(wd, sweep_lib.ATTEMPTS_FILE)) as f:
      attempts = [json.loads(line) for line in f if line.strip()]
  r["wall_s"] = sum(a.get("wall_s", 0.0) for a in attempts) if attempts else math.nan
  r["params"] = _params_from_log(os.path.join(wd, sweep_lib.LOG_FILE))
  for seq_len in sweep.extra_eval_seq_lens:
    ev = sweep_lib.read_json(os.path.join(wd, f"eval_len{seq_len}.json")) or {}
    r[f"eval_loss@{seq_len}"] = ev.get("eval_loss", math.nan)
  return r


def _params_from_log(path: str) -> int | None:
  """The trainer's parameter count (LM training and n-grams: 'Parameters: N total';
  fine-tuning: '; N params;')."""
  if not os.path.exists(path):
    return None
  with open(path, errors="replace") as f:
    found = re.findall(r"Parameters: ([\d,]+) total|; ([\d,]+) params;", f.read())
  return int("".join(found[-1]).replace(",", "")) if found else None


def value_at(series: list[tuple[float, float]], step: int) -> float:
  """The metric at `step` (the last evaluation at or before it)."""
  vals = [v for s, v in series if s <= step]
  return vals[-1] if vals else math.nan


def group_scores(sweep: sweep_lib.Sweep, out: str, specs: Sequence[sweep_lib.RunSpec],
                 at_step: int) -> dict[str, float]:
  """Mean metric over seeds at `at_step` per group (missing = worst), for halving."""
  worst = math.inf if sweep.goal == "min" else -math.inf
  by_group: dict[str, list[float]] = {}
  for spec in specs:
    v = value_at(collect_run(sweep, out, spec)["metric_series"], at_step)
    by_group.setdefault(spec.group, []).append(v if math.isfinite(v) else worst)
  return {g: float(np.mean(v)) for g, v in by_group.items()}


def _stats(values: list[float]) -> tuple[float, float]:
  v = np.array([x for x in values if x is not None and math.isfinite(x)], np.float64)
  if not v.size:
    return math.nan, math.nan
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def value_columns(sweep: sweep_lib.Sweep) -> list[str]:
  cols = [f"final:{sweep.metric}", f"best:{sweep.metric}"]
  cols += [f"final:{k}" for k in sweep.columns if k != sweep.metric]
  cols += [f"eval_loss@{n}" for n in sweep.extra_eval_seq_lens]
  return cols + ["wall_s", "tokens_per_sec"]


def aggregate(sweep: sweep_lib.Sweep, runs: list[dict]) -> list[dict]:
  """Groups (runs that differ only in seed), ranked by the final metric's mean."""
  groups: dict[str, list[dict]] = {}
  for r in runs:
    groups.setdefault(r["group"], []).append(r)
  out = []
  for name, rs in groups.items():
    g = {"group": name, "variant": rs[0]["variant"],
         "overrides": {k: v for k, v in rs[0]["overrides"].items() if k != "seed"},
         "seeds": len(rs), "steps": max(r["steps"] for r in rs),
         "params": rs[0]["params"], "status": ",".join(sorted({r["status"] for r in rs})),
         "runs": rs}
    for col in value_columns(sweep):
      g[col] = _stats([r[col] for r in rs])
    out.append(g)
  sign = 1 if sweep.goal == "min" else -1
  key = f"final:{sweep.metric}"
  out.sort(key=lambda g: (g["status"] != "done", math.isnan(g[key][0]),
                          sign * g[key][0] if not math.isnan(g[key][0]) else 0.0))
  return out


# ----------------------------------------------------------------------------- tables


def _num(v: float, digits: int = 4) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "n/a"
  if abs(v) >= 100:
    return f"{v:,.0f}"
  return f"{v:.{digits}g}"


def _pm(mean_std: tuple[float, float], n: int) -> str:
  mean, std = mean_std
  if math.isnan(mean):
    return "n/a"
  return _num(mean) if n < 2 else f"{_num(mean)} ± {_num(std, 2)}"


def _header(col: str) -> str:
  return {"wall_s": "wall (s)", "tokens_per_sec": "tokens/s"}.get(col, col.replace(":", " "))


def markdown_table(sweep: sweep_lib.Sweep, groups: list[dict]) -> str:
  short = {**sweep_lib._short_keys([*sweep.swept, "seed"]), "variant": "variant"}
  keys = table_keys(sweep)
  cols = value_columns(sweep)
  head = ["#", *[short[k] for k in keys], "seeds", *map(_header, cols), "params", "steps",
          "status"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for i, g in enumerate(groups, 1):
    cells = [str(i), *[sweep_lib._fmt(key_value(g, k, "")) for k in keys], str(g["seeds"])]
    cells += [_pm(g[c], g["seeds"]) for c in cols]
    cells += [f"{g['params']:,}" if g["params"] else "n/a", str(g["steps"]), g["status"]]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def write_csvs(sweep: sweep_lib.Sweep, groups: list[dict], out: str,
               pre: Sequence[dict] = ()) -> list[str]:
  keys, cols = table_keys(sweep), value_columns(sweep)
  path = os.path.join(out, "results.csv")
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["rank", "group", *keys, "seeds", *[f"{c}_{s}" for c in cols
                                                  for s in ("mean", "std")],
                "params", "steps", "status"])
    for i, g in enumerate(groups, 1):
      w.writerow([i, g["group"], *[key_value(g, k, "") for k in keys], g["seeds"],
                  *[x for c in cols for x in g[c]], g["params"] or "", g["steps"], g["status"]])
  runs_path = os.path.join(out, "runs.csv")
  with open(runs_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", *keys, "seed", *cols, "params", "steps", "status"])
    for g in groups:
      for r in g["runs"]:
        w.writerow([r["name"], *[key_value(r, k, "") for k in keys],
                    r["overrides"].get("seed", ""), *[r[c] for c in cols], r["params"] or "",
                    r["steps"], r["status"]])
  if not pre:
    return [path, runs_path]
  pre_path = os.path.join(out, "prerequisites.csv")  # What the variants' walls leave out.
  with open(pre_path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["run", "final:eval_loss", "final:eval_ppl", "wall_s", "params", "steps",
                "status"])
    for r in pre:
      w.writerow([r["name"], r["final:eval_loss"], r["final:eval_ppl"], r["wall_s"],
                  r["params"] or "", r["steps"], r["status"]])
  return [path, runs_path, pre_path]


# ----------------------------------------------------------------------------- report


def write_report(sweep: sweep_lib.Sweep, out: str, experiment: str = "",
                 session: dict | None = None) -> list[str]:
  """Table + CSVs + plots in `out`; the README's results block updated when it has one."""
  os.makedirs(out, exist_ok=True)
  sessions_path = os.path.join(out, SESSIONS_FILE)
  if session and session.get("trained"):
    with open(sessions_path, "a") as f:
      f.write(json.dumps(session) + "\n")
  runs = [collect_run(sweep, out, s) for s in sweep_lib.expand(sweep)]
  pre = [collect_run(sweep, out, s) for s in sweep_lib.expand_prerequisites(sweep)]
  groups = aggregate(sweep, runs)
  paths = write_csvs(sweep, groups, out, pre) + write_plots(sweep, runs, groups, out, pre)
  md = _markdown(sweep, groups, runs, out, experiment, sessions_path, paths, pre)
  md_path = os.path.join(out, "results.md")
  with open(md_path, "w") as f:
    f.write(md)
  readme = os.path.join(experiment, "README.md") if experiment else ""
  if readme and os.path.exists(readme):
    _update_readme(readme, md, os.path.relpath(out, experiment))
  return [md_path, *paths]


def _overrides_text(values: dict) -> str:
  return " ".join(f"{k}={sweep_lib._fmt(v)}" for k, v in values.items() if k != "config")


def prerequisites_table(pre: Sequence[dict]) -> str:
  """One row per prerequisite run (not ranked: they train something else, e.g. an LM)."""
  head = ["prerequisite", "final eval_loss", "final eval_ppl", "wall (s)", "params", "steps",
          "status"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in pre:
    cells = [r["name"], _num(r["final:eval_loss"]), _num(r["final:eval_ppl"]), _num(r["wall_s"]),
             f"{r['params']:,}" if r["params"] else "n/a", str(r["steps"]), r["status"]]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _markdown(sweep, groups, runs, out, experiment, sessions_path, paths, pre=()) -> str:
  n_runs = len(runs)
  fixed = _overrides_text(sweep.overrides)
  base = f"Base config `{sweep.config}`" if sweep.config else "Base config per variant"
  lines = [base + (f", fixed `{fixed}`" if fixed else "") + ".",
           f"{len(groups)} settings x {sweep.seeds} seed(s) = {n_runs} runs, ranked by the final "
           f"`{sweep.metric}` ({sweep.goal}); values are mean ± std over seeds."]
  if sweep.description:
    lines.insert(0, sweep.description)
  for kind, bundles in (("Variant", sweep.variants), ("Prerequisite", sweep.prerequisites)):
    for name, b in bundles.items():
      text = _overrides_text(b)
      lines.append(f"- {kind} `{name}`: `{b.get('config') or sweep.config}`" +
                   (f" + `{text}`" if text else ""))
  if sweep.halving:
    rungs = sweep.halving.rungs(int(sweep.overrides.get("num_train_steps", 0)))
    lines.append(f"Successive halving: rungs {rungs} steps, the best 1/{sweep.halving.eta} "
                 "continue.")
  lines += ["", markdown_table(sweep, groups), ""]
  if pre:
    lines += [prerequisites_table(pre), ""]
  best = next((g for g in groups if g["status"] == "done"), None)
  if best:
    spec = best["runs"][0]["spec"]
    workdir = f"/tmp/{os.path.basename(experiment.rstrip('/')) or 'best'}"
    cmds = []
    if spec.needs:  # Its prerequisites first, in workdirs beside the run's.
      cmds = [sweep_lib.display_command(sweep, r["spec"], f"{workdir}/{r['name']}") for r in pre]
      workdir += f"/{spec.variant or 'run'}"
    cmds.append(sweep_lib.display_command(sweep, spec, workdir))
    lines += [f"Best: **{best['group']}**, reproduce with", "", "```", *cmds, "```", ""]
  walls = [r["wall_s"] for r in [*pre, *runs] if not math.isnan(r["wall_s"])]
  if os.path.exists(sessions_path):
    with open(sessions_path) as f:
      sessions = [json.loads(line) for line in f if line.strip()]
    for s in sessions:
      lines.append(f"- sweep invocation: {s['wall_s']:.0f} s wall, parallel {s['parallel']}, "
                   f"load average {s['load_start']} at start, {s['load_end']} at end")
  if walls:
    lines.append(f"- sum of run wall times (trainer processes incl. start-up and compile"
                 f"{', prerequisites included' if pre else ''}): {sum(walls):.0f} s")
  lines += ["", "Plots: " + ", ".join(f"`{os.path.relpath(p, out)}`" for p in paths
                                      if p.endswith(".png")), ""]
  return "\n".join(lines)


def _update_readme(readme: str, md: str, rel_out: str) -> None:
  with open(readme) as f:
    text = f.read()
  if MARK_BEGIN not in text or MARK_END not in text:
    return
  md = re.sub(r"`([\w.@=,+-]+\.png)`", lambda m: f"![{m.group(1)}]({rel_out}/{m.group(1)})", md)
  head, rest = text.split(MARK_BEGIN, 1)
  _, tail = rest.split(MARK_END, 1)
  with open(readme, "w") as f:
    f.write(f"{head}{MARK_BEGIN}\n{md}\n{MARK_END}{tail}")
