"""The benchmark: consistent throughput/MFU numbers, time to a target loss, AOT memory check."""

import json

import jax
import pytest
from conftest import REPO, cpu_env, tiny_config

from jaxlm import flops, train
from jaxlm.config import ConfigError
from jaxlm.data import pipeline
from jaxlm.lab import aot, benchmark


def test_throughput_numbers_are_consistent(tmp_path, text_file, data_dir):
  c = tiny_config(text_file, data_dir)
  r = benchmark.throughput(c, str(tmp_path), steps=4, warmup=1, peak=1e9,
                               devices=jax.devices()[:2], profile_steps=2)
  tokens = c.data.batch_size * c.data.seq_len
  assert r["tokens_per_step"] == tokens and r["devices"] == 2
  assert r["tokens_per_s"] == pytest.approx(tokens / r["step_time_median_s"])
  # CPU devices share one host: MFU is against the host's peak, not 2x it.
  assert r["mfu"] == pytest.approx(r["tokens_per_s"] * r["flops_per_token"] / 1e9)
  assert r["step_time_min_s"] <= r["step_time_median_s"] <= r["step_time_p90_s"]
  # The stated formula (jaxlm/flops.py): 6 * matmul weights + attention.
  m = c.model
  d, f = m.emb_dim, m.mlp_dim
  matmul = m.num_layers * (4 * d * d + 2 * d * f) + r["padded_vocab"] * d  # Tied head.
  expected = 6 * matmul + 12 * m.num_layers * c.data.seq_len * m.emb_dim
  assert r["flops_per_token"] == pytest.approx(expected)
  # XLA's own count of the compiled step agrees with the model estimate to within 2x
  # (it adds the optimizer, norms, softmax and the padded vocabulary rows).
  if r["xla_flops_per_step"]:
    assert 0.5 < r["xla_flops_per_step"] / (expected * tokens) < 2.0
  assert r["compile_s"] > 0 and r["compiled_memory_bytes"]["total"] > 0
  assert r["peak_host_memory_mb"] > 50
  assert 0 < r["final_train_loss"] < 10
  ops = r["op_profile"]["ops"]  # Where the time goes, by XLA op kind.
  assert ops and r["op_profile"]["op_time_per_step_ms"] > 0
  assert sum(o["share"] for o in ops) <= 1.0 + 1e-6


def test_op_profile_by_instruction_names_shapes_and_source_ops(tmp_path, text_file, data_dir):
  r = benchmark.throughput(tiny_config(text_file, data_dir), str(tmp_path), steps=2, warmup=1,
                           peak=1e9, devices=jax.devices()[:2], profile_steps=2,
                           profile_by="instruction")
  ops = r["op_profile"]["ops"]
  assert r["op_profile"]["by"] == "instruction" and ops
  named = [o for o in ops if o.get("shape", "").startswith(("f32[", "s32[", "("))]
  assert named, ops  # Instructions of the compiled step, with their shapes...
  assert any("dot_general" in o["source"] for o in named), ops  # ...and source ops.
  assert len({o["op"] for o in ops}) == len(ops)  # One row per instruction, not per kind.


def test_measured_peak_is_positive():
  assert benchmark.measure_peak_flops(n=128, reps=2) > 1e6


def test_time_to_loss_stops_at_the_target(tmp_path, text_file, data_dir):
  c = tiny_config(text_file, data_dir, **{"num_train_steps": 60, "eval_every_steps": 5,
                                          "optimizer.learning_rate": 3e-3})
  r = benchmark.time_to_loss(c, str(tmp_path / "a"), target=4.0, max_seconds=300,
                             devices=jax.devices()[:1])
  assert r["reached"] and r["eval_loss"] <= 4.0 and r["steps"] < 60
  assert r["wall_time_s"] > 0 and r["history"][-1]["eval_loss"] == r["eval_loss"]
  assert all(h.get("eval_loss", 9) > 4.0 for h in r["history"][:-1])
  c.num_train_steps = 10
  miss = benchmark.time_to_loss(c, str(tmp_path / "b"), target=0.01, max_seconds=300,
                                devices=jax.devices()[:1])
  assert not miss["reached"] and miss["steps"] == 10 and miss["eval_loss"] > 0.01


def test_strided_estimate_evaluates_every_nth_batch_of_the_split(tmp_path, text_file, data_dir):
  c = tiny_config(text_file, data_dir)
  run = train.Run(c, str(tmp_path), jax.devices()[:1])
  params, eval_fn = run.init_state().params, run.jit_eval_step()
  every = pipeline.eval_batches(c.data, run.tokenizer)
  assert len(every) >= 4
  cache: dict = {}
  strided = train.evaluate(run, params, eval_fn, stride=3, cache=cache)
  sums = [jax.device_get(eval_fn(params, run.to_global(b))) for b in every[::3]]
  want = sum(float(x["loss_sum"]) for x in sums) / sum(float(x["weight_sum"]) for x in sums)
  assert strided["loss"] == pytest.approx(want, rel=1e-6)  # Batches 0, 3, 6, ... of the split.
  first = train.evaluate(run, params, eval_fn, max_batches=len(sums), cache=cache)
  assert first["tokens"] == strided["tokens"] and first["loss"] != pytest.approx(want, rel=1e-6)


def test_aot_memory_per_device_shrinks_with_fsdp(text_file, data_dir):
  assert jax.device_count() == 8
  out = {}
  for shape in ((8, 1, 1), (1, 8, 1)):
    c = tiny_config(text_file, data_dir, **{"mesh.shape": shape, "model.emb_dim": 64})
    out[shape] = aot.compile_for_mesh(c, vocab_size=1000)
    assert out[shape]["devices"] == 8 and out[shape]["memory_per_device_bytes"]["total"] > 0
  replicated, sharded = out[(8, 1, 1)], out[(1, 8, 1)]
  # Parameters + Adam moments are split 8 ways over fsdp (bar tiny unsharded biases).
  assert sharded["state_bytes_per_device"] < replicated["state_bytes_per_device"] / 4
  assert sharded["memory_per_device_bytes"]["argument"] < \
      replicated["memory_per_device_bytes"]["argument"]
  run = aot.AbstractRun(c, 1000)
  assert run.num_params == replicated["params"] and run.tokenizer.vocab_size == 1000


def test_aot_bad_mesh_names_the_flag():
  with pytest.raises(ConfigError, match="--mesh"):
    aot.parse_mesh("16x16")


def test_aot_cli_uses_fake_devices_in_a_subprocess(tmp_path):
  """From a 1-device process, `--aot --mesh=2,2,1` re-runs itself with 4 fake devices."""
  import subprocess
  import sys
  out = tmp_path / "aot.json"
  env = cpu_env(1)
  proc = subprocess.run([sys.executable, "-m", "jaxlm.lab.bench",
                         "--config=configs/gpt2_small.py:smoke", "--aot", "--mesh=2,2,1",
                         "--vocab_size=300", f"--out={out}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(out.read_text())
  assert r["fake_cpu_devices"] and r["devices"] == 4 and r["padded_vocab"] == 384
  assert r["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
  assert r["memory_per_device_bytes"]["total"] > 0 and "memory_per_device_gib" in proc.stdout


def test_flops_per_token_counts_attention_with_seq_len(text_file, data_dir):
  c = tiny_config(text_file, data_dir)
  short = flops.flops_per_token({}, c, 100)
  c.data.seq_len *= 2
  assert flops.flops_per_token({}, c, 100) - short == pytest.approx(
      12 * c.model.num_layers * (c.data.seq_len // 2) * c.model.emb_dim)


def test_gpu_script_runs_its_plumbing_on_cpu_and_refuses_without_a_gpu(tmp_path):
  """experiments/bench/gpu.sh: the smoke mode runs the same bench command on CPU and writes
  the JSON the summary reads; the real mode stops with a fix when JAX sees no GPU."""
  import os
  import subprocess
  import sys

  script = os.path.join(REPO, "experiments", "bench", "gpu.sh")
  env = cpu_env(1, PYTHON=sys.executable, JAXLM_GPU_SH_SMOKE="1")
  got = subprocess.run(["bash", script, str(tmp_path / "gpu")], env=env, capture_output=True,
                       text=True, timeout=300)
  assert got.returncode == 0, got.stderr[-3000:]
  r = json.loads((tmp_path / "gpu" / "gpt2_small_xla.json").read_text())
  assert r["mode"] == "throughput" and r["mfu"] > 0 and r["tokens_per_s"] > 0
  assert "gpt2_small_xla.json:" in got.stdout and "MFU" in got.stdout
  env.pop("JAXLM_GPU_SH_SMOKE")
  got = subprocess.run(["bash", script, str(tmp_path / "none")], env=env, capture_output=True,
                       text=True, timeout=300)
  assert got.returncode == 2 and "no GPU" in got.stderr and "Fix:" in got.stderr
  assert not (tmp_path / "none").exists()
