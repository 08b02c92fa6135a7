"""The lm-eval harness model: scores against a plain forward pass, rolling windows against eval
mode, the real `lm_eval.simple_evaluate` on the two offline tasks, and the CLI."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, SHARED_DATA, cpu_env, tiny_config
from inference_helpers import random_workdir

lm_eval = pytest.importorskip("lm_eval", reason="the [eval] extra (lm-eval) is not installed")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from jaxlm import evaluate, ngram_run, train  # noqa: E402
from jaxlm.harness import JaxLM  # noqa: E402
from jaxlm.harness_tasks import write_tasks  # noqa: E402

L = 32  # tiny_config's seq_len.
A_DOC = "abcdefghijklmnopqrstuvwxyzABCDEF"  # L bytes: the eval stream's EOS lands at offset L.
T_DOC = ("the model learns to predict the next token from the previous ones and a "
         "small corpus!!")[:2 * L]  # 2L bytes: two full rolling windows.


@pytest.fixture(scope="module")
def gpt_wd(tmp_path_factory, text_file, data_dir):
  tmp = tmp_path_factory.mktemp("harness")
  eval_file = tmp / "eval.txt"
  eval_file.write_text(f"{A_DOC}\n\n{T_DOC}\n")
  wd = random_workdir(str(tmp / "gpt"), text_file, data_dir, **{"data.eval_path": str(eval_file)})
  return wd, tiny_config(text_file, data_dir, **{"data.eval_path": str(eval_file)})


def _reference_logprobs(m, ids):
  """log p(ids[i] | ids[:i]) for i >= 1 from one plain forward pass (no harness code)."""
  import jax.numpy as jnp

  from jaxlm.generate import mesh_context
  with mesh_context(m.mesh, m.rules):
    logits = m.model.apply({"params": m.params}, jnp.asarray([ids[:-1]], jnp.int32))
  lp = np.asarray(jax.nn.log_softmax(logits[0]), np.float64)
  return lp[np.arange(len(ids) - 1), ids[1:]]


def test_loglikelihood_matches_a_forward_pass_truncates_and_batches(gpt_wd):
  wd, _ = gpt_wd
  lm = JaxLM(workdir=wd, batch_size=3)
  m = lm._m
  reqs = [("the model", " learns"), ("a b ", "c"), ("x" * 100, "yz"), ("", "hello")]
  got = lm.loglikelihood([Instance("loglikelihood", {}, r, i)
                          for i, r in enumerate(reqs)], disable_tqdm=True)
  eos = lm.prefix_token_id
  for (ctx, cont), (ll, _) in zip(reqs, got, strict=True):
    ctx_ids = lm.tok_encode(ctx.rstrip()) or [eos]
    whole = ctx_ids + lm.tok_encode(ctx[len(ctx.rstrip()):] + cont)
    window = whole[-(L + 1):]  # Left truncation to the model's context.
    n = len(whole) - len(ctx_ids)
    want = _reference_logprobs(m, window)[-n:].sum()
    assert abs(ll - want) < 1e-4, (ctx, cont, ll, want)
  # The trailing space of the context moves to the continuation (token boundary).
  assert got[1][0] == pytest.approx(lm.loglikelihood([Instance(
      "loglikelihood", {}, ("a b", " c"), 0)], disable_tqdm=True)[0][0], abs=1e-5)
  # Batch size does not change results (order kept).
  one = JaxLM(workdir=wd, batch_size=1).loglikelihood(
      [Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)], disable_tqdm=True)
  assert np.allclose([g[0] for g in got], [o[0] for o in one], atol=1e-4)


def test_loglikelihood_rolling_equals_eval_mode(gpt_wd):
  wd, config = gpt_wd
  result = evaluate.evaluate_checkpoint(config, wd, split="validation")
  eval_total = result["loss"] * result["tokens"]
  lm = JaxLM(workdir=wd)
  eos, a, t = lm.eot_token_id, lm.tok_encode(A_DOC), lm.tok_encode(T_DOC)
  assert len(a) == L and len(t) == 2 * L
  assert result["tokens"] == (L - 1) + 1 + 2 * L + 1  # a2..aL, EOS, the text, EOS.
  rolling = lm.loglikelihood_rolling([Instance(
      "loglikelihood_rolling", {}, (T_DOC,), 0)], disable_tqdm=True)[0]
  # Eval mode packs [A, EOS, T, EOS] into L+1 windows overlapping by one token: the first
  # scores A's tail and its EOS, the next two are exactly the rolling windows of T (context:
  # the EOS before T), the last scores T's EOS after T's last token alone.
  (a_ll, _), (eos_ll, _) = lm.score_ids([(a[:1], a[1:] + [eos]), (t[-1:], [eos])])
  assert abs(eval_total + (a_ll + rolling + eos_ll)) < 1e-4 * result["tokens"], (
      eval_total, a_ll, rolling, eos_ll)
  # Negative control: the same text without the maximal-context rule (context 1 per window).
  short = JaxLM(workdir=wd, max_length=L // 2)
  other = short.loglikelihood_rolling([Instance(
      "loglikelihood_rolling", {}, (T_DOC,), 0)], disable_tqdm=True)[0]
  assert abs(other - rolling) > 1e-3


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
  if not os.path.isdir(os.path.join(SHARED_DATA, "ptb")):
    pytest.skip(f"shared datasets not found at {SHARED_DATA}")
  out = str(tmp_path_factory.mktemp("tasks"))
  write_tasks(out, SHARED_DATA, limit=12)
  return out


@pytest.fixture(scope="module")
def trained_gpt(tmp_path_factory, text_file, data_dir):
  wd = str(tmp_path_factory.mktemp("trained") / "gpt")
  train.train_and_evaluate(tiny_config(text_file, data_dir), wd, jax.devices()[:1])
  return wd


def test_simple_evaluate_runs_both_offline_tasks(trained_gpt, tasks_dir, monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  tm = TaskManager(include_path=tasks_dir)
  lm = JaxLM(workdir=trained_gpt, batch_size=8)
  out = lm_eval.simple_evaluate(model=lm, tasks=["jaxlm_ptb_lastword", "jaxlm_sst2_mc"],
                                task_manager=tm, log_samples=True)
  res = out["results"]
  assert 0.0 <= res["jaxlm_sst2_mc"]["acc,none"] <= 1.0
  assert 0.0 <= res["jaxlm_ptb_lastword"]["acc,none"] <= 1.0
  assert np.isfinite(res["jaxlm_ptb_lastword"]["perplexity,none"])
  samples = out["samples"]["jaxlm_sst2_mc"]
  assert len(samples) == 12 and len(out["samples"]["jaxlm_ptb_lastword"]) == 12
  # The harness scored what the model says: recompute one SST-2 choice directly.
  doc = samples[0]["doc"]
  ctx = f"{doc['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:"
  want = lm.score_ids([(lm.tok_encode(ctx), lm.tok_encode(" negative"))])[0][0]
  assert samples[0]["resps"][0][0][0] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("family", ["lstm", "ngram"])
def test_other_causal_families_score_and_generate(tmp_path, text_file, data_dir, family):
  if family == "ngram":
    config = tiny_config(text_file, data_dir, **{"model.family": "ngram", "ngram.order": 3})
    wd = str(tmp_path / "ng")
    ngram_run.train_and_evaluate(config, wd)
  else:
    wd = random_workdir(str(tmp_path / "lstm"), text_file, data_dir, **{"model.family": "lstm"})
  lm = JaxLM(workdir=wd, batch_size=4)
  reqs = [("the model", " learns"), ("", "the"), ("x" * 100, "y")]
  got = lm.loglikelihood([Instance("loglikelihood", {}, r, i)
                          for i, r in enumerate(reqs)], disable_tqdm=True)
  assert all(np.isfinite(ll) and ll < 0 for ll, _ in got), got
  if family == "lstm":  # Against a plain forward pass.
    ids = lm.tok_encode("the model learns")
    want = _reference_logprobs(lm._m, ids)[-len(" learns"):].sum()
    assert got[0][0] == pytest.approx(want, abs=1e-4)
  else:  # Against the n-gram model's own log_prob.
    ids = lm.tok_encode("the model learns")
    want = sum(lm.scorer.lm.log_prob(ids[:i][-2:], ids[i]) for i in range(9, len(ids)))
    assert got[0][0] == pytest.approx(want, abs=1e-6)
  text = lm.generate_until([Instance(
      "generate_until", {}, ("the model", {"until": ["\n"], "max_gen_toks": 6}), 0)],
      disable_tqdm=True)[0]
  assert isinstance(text, str) and len(text.encode()) <= 6 * 4 and "\n" not in text


def test_generate_until_uses_the_kv_cache_generator_and_stops(gpt_wd):
  wd, _ = gpt_wd
  lm = JaxLM(workdir=wd)
  req = ("the model", {"until": ["e"], "max_gen_toks": 20})
  text = lm.generate_until([Instance("generate_until", {}, req, 0)],
                           disable_tqdm=True)[0]
  full = lm.generator.generate(["the model"], max_new_tokens=20, temperature=0.0)[0].text
  assert text == full.split("e")[0]


def test_cli_registers_the_model_and_bad_args_name_the_fix(trained_gpt, tasks_dir, tmp_path):
  env = cpu_env(1, HF_DATASETS_OFFLINE="1")
  p = subprocess.run([sys.executable, "-m", "jaxlm.harness", "run", "--model", "jaxlm",
                      "--model_args", f"workdir={trained_gpt}", "--tasks", "jaxlm_sst2_mc",
                      "--include_path", tasks_dir, "--limit", "4", "--output_path",
                      str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True,
                     text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "jaxlm_sst2_mc" in p.stdout and "acc" in p.stdout
  found = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "out") for f in fs
           if f.startswith("results")]
  assert found and "jaxlm_sst2_mc" in json.load(open(found[0]))["results"]
  with pytest.raises(ValueError, match="unknown model_args"):
    JaxLM(workdir=trained_gpt, stepp=3)
  with pytest.raises(Exception, match="config.json"):
    JaxLM(workdir=str(tmp_path))
