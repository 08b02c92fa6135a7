"""EleutherAI lm-evaluation-harness model for jaxlm workdirs (gpt, lstm, ngram).

  pip install -e ".[eval]"
  python -m jaxlm.harness --model jaxlm --model_args workdir=W[,step=N] --tasks T \\
      [--include_path DIR]                       # the lm_eval CLI, with "jaxlm" registered
  lm_eval.simple_evaluate(model=JaxLM(workdir=W), tasks=[...])           # from Python

lm_eval 0.4.13 has no plugin discovery for models: `--include_path` adds task YAMLs
only (harness issue #1457), so the `lm_eval` command itself cannot see a model class
defined outside its source tree. `python -m jaxlm.harness` is the harness's own CLI
(`lm_eval.__main__.cli_evaluate`, same flags) run after this module has registered
"jaxlm" — the harness's documented way for external libraries.

Scoring follows the harness's conventions: a (context, continuation) pair is encoded
whole and split at the context's token count (trailing context spaces move to the
continuation); the window fed to the model is the last `max_length + 1` tokens,
left-truncated; an empty context is the prefix token (EOS for packed training, where a
document follows the previous one's EOS; BOS for `packing=pad` runs and n-gram models).
`loglikelihood_rolling` cuts a text into the harness's disjoint windows with maximal
context, which is exactly how `--mode=eval` packs a stream of `seq_len + 1` windows.

Shape key: B batch (bucket), L window length (bucket), V vocab.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from jaxlm.generate import MIN_PROMPT_BUCKET, Generator, bucket, mesh_context

DEFAULT_MAX_GEN_TOKS = 256


@dataclasses.dataclass
class _Scored:
  logprob: float
  greedy: bool


class _NeuralScorer:
  """Per-token log-probs of a gpt or lstm model over right-padded windows (jitted per bucket)."""

  def __init__(self, m):
    self.model, self.params, self.mesh, self.rules = m.model, m.params, m.mesh, m.rules

    def logprobs(params, inputs_BL, targets_BL):
      logits_BLV = self.model.apply({"params": params}, inputs_BL)
      lp_BLV = jax.nn.log_softmax(logits_BLV.astype(jnp.float32), axis=-1)
      lp_BL = jnp.take_along_axis(lp_BLV, targets_BL[..., None], axis=-1)[..., 0]
      return lp_BL, jnp.argmax(logits_BLV, axis=-1) == targets_BL

    self._fn = jax.jit(logprobs)

  def _rows(self, n: int) -> int:
    from jaxlm import sharding
    axes = sharding.batch_sharding(self.mesh, self.rules).mesh.shape
    dp = axes.get("data", 1) * axes.get("fsdp", 1)
    return -(-bucket(n) // dp) * dp

  def score(self, windows: list[tuple[list[int], int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """windows: (tokens, n_targets) -> (log p, greedy) of each window's last n_targets tokens."""
    from jaxlm import sharding
    longest = max(len(t) - 1 for t, _ in windows)
    length, rows = bucket(longest, MIN_PROMPT_BUCKET), self._rows(len(windows))
    inputs, targets = np.zeros((rows, length), np.int32), np.zeros((rows, length), np.int32)
    for r, (toks, _) in enumerate(windows):
      inputs[r, :len(toks) - 1], targets[r, :len(toks) - 1] = toks[:-1], toks[1:]
    shard = sharding.batch_sharding(self.mesh, self.rules)
    with mesh_context(self.mesh, self.rules):
      lp, greedy = self._fn(self.params, jax.device_put(inputs, shard),
                            jax.device_put(targets, shard))
    lp, greedy = np.asarray(lp, np.float64), np.asarray(greedy)
    return [(lp[r, len(t) - 1 - n:len(t) - 1], greedy[r, len(t) - 1 - n:len(t) - 1])
            for r, (t, n) in enumerate(windows)]


class _NgramScorer:
  """Kneser-Ney log-probs: each token from (up to order-1 of) the window's earlier tokens."""

  def __init__(self, lm):
    self.lm = lm

  def score(self, windows):
    out = []
    for toks, n in windows:
      lps, greedy = [], []
      for i in range(len(toks) - n, len(toks)):
        p = self.lm.distribution(toks[max(0, i - self.lm.order + 1):i])
        lps.append(float(np.log(p[toks[i]])) if p[toks[i]] > 0 else -np.inf)
        greedy.append(int(np.argmax(p)) == toks[i])
      out.append((np.array(lps), np.array(greedy)))
    return out


@register_model("jaxlm")
class JaxLM(TemplateLM):
  """A jaxlm workdir as an lm-eval `LM`: loglikelihood, loglikelihood_rolling, generate_until.

  Args (also as `--model_args`): workdir; step (default latest); batch_size (windows per
  device call, default 16); max_length (context, default the run's data.seq_len);
  devices (how many local devices to shard over; default 1).
  """

  def __init__(self, workdir: str, step: int | None = None, batch_size: int | str = 16,
               max_length: int | None = None, devices: int = 1, **unused):
    super().__init__()
    from jaxlm import inference
    from jaxlm.data import tokenizers as tok_lib
    unused.pop("max_batch_size", None), unused.pop("device", None)
    if unused:
      raise ValueError(f"jaxlm model: unknown model_args {sorted(unused)}. Fix: use workdir, "
                       "step, batch_size, max_length, devices.")
    self.workdir = os.path.abspath(os.path.expanduser(str(workdir)))
    self.config = inference.load_config(self.workdir)
    self.family = self.config.model.family
    self.tokenizer_ = tok_lib.load_tokenizer(self.workdir)
    try:
      self.batch_size = max(1, int(batch_size))
    except ValueError as e:
      raise ValueError(f"jaxlm model: batch_size={batch_size!r} must be an integer (no 'auto')."
                       ) from e
    self._max_length = int(max_length or self.config.data.seq_len)
    self.generator = None
    if self.family == "ngram":
      from jaxlm import ngram_run
      from jaxlm.ngram import KneserNeyLM
      path = os.path.join(self.workdir, ngram_run.MODEL_FILE)
      if not os.path.isfile(path):
        raise ValueError(f"No fitted n-gram model at {path}. Fix: train the ngram run first.")
      self.scorer = _NgramScorer(KneserNeyLM.load(path))
      self.step = 0
    elif self.family in ("gpt", "lstm"):
      m = inference.load_for_inference(self.workdir, step, devices=jax.local_devices()[:devices])
      self.scorer, self.step, self._m = _NeuralScorer(m), m.step, m
      if self.family == "gpt":
        self.generator = Generator(m.model, m.params, m.tokenizer, m.mesh, m.rules,
                                   max_context=self._max_length)
    else:
      raise ValueError(f"jaxlm model: family {self.family!r} is not a causal LM. Fix: evaluate "
                       "a gpt, lstm or ngram workdir.")
    packed = self.config.data.packing == "pack" and self.family != "ngram"
    self._prefix = self.tokenizer_.eos_id if packed else self.tokenizer_.bos_id

  # ------------------------------------------------------------------ TemplateLM interface

  @property
  def eot_token_id(self) -> int:
    return self.tokenizer_.eos_id

  @property
  def prefix_token_id(self) -> int:
    return self._prefix

  @property
  def max_length(self) -> int:
    return self._max_length

  def tok_encode(self, string: str, add_special_tokens=None, **kwargs) -> list[int]:
    return [int(t) for t in self.tokenizer_.encode(string)]

  def tok_decode(self, ids) -> str:
    return self.tokenizer_.decode(ids)

  def score_ids(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """(sum log p(continuation | context), all greedy) per (context ids, continuation ids).

    The model sees the last max_length + 1 tokens of context + continuation (left
    truncation); a continuation longer than max_length keeps its last max_length tokens.
    """
    windows = []
    for ctx, cont in pairs:
      if not ctx:
        raise ValueError("score_ids: an empty context; pass [prefix_token_id] instead.")
      if not cont:
        raise ValueError("score_ids: an empty continuation has no log-probability.")
      toks = (list(ctx) + list(cont))[-(self.max_length + 1):]
      windows.append((toks, min(len(cont), len(toks) - 1)))
    out = []
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))  # Similar lengths.
    results: dict[int, tuple[float, bool]] = {}
    for s in range(0, len(order), self.batch_size):
      idx = order[s:s + self.batch_size]
      for i, (lp, greedy) in zip(idx, self.scorer.score([windows[i] for i in idx]), strict=True):
        results[i] = (float(lp.sum()), bool(greedy.all()))
    out = [results[i] for i in range(len(windows))]
    return out

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
    results = self.score_ids([(ctx, cont) for _, ctx, cont in requests])
    for (key, _, _), res in zip(requests, results, strict=True):
      self.cache_hook.add_partial("loglikelihood", key, res)
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    out = []
    for req in requests:
      (string,) = req.args
      windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
          token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
          max_seq_len=self.max_length, context_len=1)]
      total = sum(lp for lp, _ in self.score_ids(windows)) if windows else 0.0
      self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
      out.append(total)
    return out

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    out = []
    for req in requests:
      context, gen_kwargs = req.args
      kw = dict(gen_kwargs or {})
      until = kw.pop("until", None) or []
      until = [until] if isinstance(until, str) else list(until)
      max_gen = int(kw.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
      max_gen = max(1, min(max_gen, self.max_length - 1))
      do_sample = bool(kw.pop("do_sample", False))
      temperature = float(kw.pop("temperature", 1.0 if do_sample else 0.0)) if do_sample else 0.0
      ids = self.tok_encode(context)[-(self.max_length - max_gen):] or [self._prefix]
      text = self._generate(ids, max_gen, temperature, until, int(kw.pop("seed", 0)))
      for s in until:  # The harness expects the text cut before the first stop string.
        text = text.split(s)[0] if s else text
      self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
      out.append(text)
    return out

  def _generate(self, ids: list[int], max_gen: int, temperature: float, until, seed) -> str:
    if self.generator is not None:  # KV-cache decoding.
      return self.generator.generate_ids([ids], max_new_tokens=max_gen, temperature=temperature,
                                         seed=seed, stop=until)[0].text
    toks: list[int] = []  # lstm / ngram: greedy, recomputing the window each step.
    rng = np.random.default_rng(seed)
    for _ in range(max_gen):
      window = (ids + toks)[-self.max_length:]
      lp = self._next_logprobs(window)
      if temperature > 0:
        p = np.exp((lp - lp.max()) / temperature)
        tok = int(rng.choice(len(p), p=p / p.sum()))
      else:
        tok = int(np.argmax(lp))
      if tok == self.tokenizer_.eos_id:
        break
      toks.append(tok)
      if until and any(s in self.tok_decode(toks) for s in until):
        break
    return self.tok_decode(toks)

  def _next_logprobs(self, window: list[int]) -> np.ndarray:
    v = self.tokenizer_.vocab_size
    if self.family == "ngram":
      p = self.scorer.lm.distribution(window[-(self.scorer.lm.order - 1):] if
                                      self.scorer.lm.order > 1 else [])
      return np.log(np.maximum(p[:v], 1e-300))
    logits = self._m.model.apply({"params": self._m.params}, jnp.asarray([window], jnp.int32))
    return np.asarray(jax.nn.log_softmax(logits[0, -1, :v]))


def main(argv=None) -> int:
  """The lm_eval CLI (same flags) with the "jaxlm" model registered."""
  from lm_eval.__main__ import cli_evaluate
  if argv is not None:
    sys.argv = [sys.argv[0], *argv]
  cli_evaluate()
  return 0


if __name__ == "__main__":
  sys.exit(main())
