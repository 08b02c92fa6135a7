"""DP-SGD: per-example clipping, the accountant against published settings, 1 vs 8 devices,
exact resume, and the epsilon in metrics.jsonl."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import metric_by_step, tiny_config

from jaxlm import config as config_lib
from jaxlm import dp, train


def _dp_config(text_file, data_dir, **kw):
  c = tiny_config(text_file, data_dir, **{"optimizer.dp.enabled": True,
                                           "optimizer.dp.l2_clip": 0.5,
                                           "optimizer.dp.noise_multiplier": 0.8,
                                           "num_train_steps": 4, "eval_every_steps": 2,
                                           "checkpoint_every_steps": 2, **kw})
  return c


def test_per_example_grads_are_clipped_to_the_bound(text_file, data_dir):
  c = _dp_config(text_file, data_dir, **{"optimizer.dp.noise_multiplier": 0.0})
  run = train.Run(c, None, jax.devices()[:1])
  state = run.init_state()
  from jaxlm.data import shards
  it = shards.ShardedIterator(c.data, run.tokenizer, 0, 0, 1)
  batch = {k: jnp.asarray(v) for k, v in next(it).items()}
  loss_fn = lambda *a: train.loss_and_metrics(*a, objective=run.objective)
  agg = dp.aggregate(c.optimizer.dp)

  @jax.jit  # One compiled program (eager, every op of the model compiles on its own).
  def check(params, batch):
    grads, _ = dp.per_example_grads(loss_fn, params, run.model, batch, jax.random.key(0), False)
    norms = jax.vmap(optax.tree.norm)(grads)
    row3 = jax.grad(lambda p: (lambda ls, s: ls / s["weight_sum"])(*loss_fn(
        p, run.model, jax.tree.map(lambda x: x[3:4], batch), jax.random.fold_in(
            jax.random.key(0), 3), False, False)))(params)
    out, _ = agg.update(grads, agg.init(params))
    # The mean of the clipped example grads: each clipped one has norm exactly C <= 0.5.
    clipped = jax.tree.map(lambda g: g * (0.5 / norms).reshape(-1, *[1] * (g.ndim - 1)), grads)
    want = jax.tree.map(lambda g: g.mean(0), clipped)
    unclipped = optax.tree.norm(jax.tree.map(lambda g: g.mean(0), grads))
    return (norms, optax.tree.norm(row3), jax.vmap(optax.tree.norm)(clipped), out, want,
            unclipped)

  norms, row3, clipped_norms, out, want, unclipped = check(state.params, batch)
  assert norms.shape == (8,) and float(norms.min()) > 0.5  # All need clipping at C=0.5.
  np.testing.assert_allclose(row3, norms[3], rtol=1e-5)  # vmap equals one row at a time.
  assert all(float(n) <= 0.5 + 1e-5 for n in clipped_norms)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert float(optax.tree.norm(out)) <= 0.5 + 1e-5
  assert float(unclipped) > 0.5  # Negative control: the unclipped mean exceeds the bound.


def test_epsilon_matches_published_settings():
  # dp-accounting's own example (rdp_privacy_accountant_test.test_compute_epsilon_delta_
  # gaussian): sigma 4.530877117, one full batch, is (1, 1e-6)-DP by RDP; PLD is tighter.
  assert dp.epsilon(4.530877117, 1, 1, 1, 1e-6, "rdp", poisson=True) == pytest.approx(1.0, 1e-5)
  assert dp.epsilon(4.530877117, 1, 1, 1, 1e-6, "pld", poisson=True) < 1.0
  # Abadi et al. 2016 / TF Privacy's compute_dp_sgd_privacy MNIST example: N=60000, batch 256,
  # sigma 1.1, 60 epochs, delta 1e-5: reported eps = 2.92 (older RDP orders); today's
  # accountant is tighter, never looser.
  steps = math.ceil(60 * 60000 / 256)
  eps = dp.epsilon(1.1, 256, 60000, steps, 1e-5, "rdp", poisson=True)
  assert 2.4 < eps <= 2.92
  assert dp.epsilon(1.1, 256, 60000, steps // 2, 1e-5, "rdp", poisson=True) < eps
  assert dp.epsilon(0.0, 256, 60000, 10, 1e-5) == math.inf


@pytest.mark.parametrize("poisson", [False, True])
def test_cached_one_step_rdp_times_steps_equals_composing_the_steps(poisson):
  """`epsilon` scales one cached step's RDP curve (a run asks at every logged step);
  dp-accounting composing all the steps itself gives the same epsilon."""
  import dp_accounting
  from dp_accounting import rdp

  def composed(steps):
    gauss = dp_accounting.GaussianDpEvent(0.8)
    if poisson:
      ev, rel = (dp_accounting.PoissonSampledDpEvent(8 / 200, gauss),
                 dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    else:
      ev, rel = (dp_accounting.SampledWithoutReplacementDpEvent(200, 8, gauss),
                 dp_accounting.NeighboringRelation.REPLACE_ONE)
    acc = rdp.RdpAccountant(neighboring_relation=rel)
    acc.compose(ev, steps)
    return acc.get_epsilon(1e-5)

  got = {s: dp.epsilon(0.8, 8, 200, s, 1e-5, "rdp", poisson) for s in (1, 3, 50)}
  for s, e in got.items():
    assert e == pytest.approx(composed(s), rel=1e-9)
  assert got[3] != pytest.approx(composed(50), rel=1e-3)  # Control: steps matter.


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory, text_file, data_dir) -> str:
  """The default DP-SGD test run on one device (shared by two tests: one compile, one run)."""
  wd = str(tmp_path_factory.mktemp("dp") / "one")
  train.train_and_evaluate(_dp_config(text_file, data_dir), wd, jax.devices()[:1])
  return wd


def test_dp_sgd_same_on_1_and_8_devices_and_logs_epsilon(tmp_path, text_file, data_dir,
                                                         one_device_run):
  c = _dp_config(text_file, data_dir)
  train.train_and_evaluate(c, str(tmp_path / "eight"), jax.devices()[:8])
  one, eight = (metric_by_step(w, "eval_loss") for w in (one_device_run, tmp_path / "eight"))
  assert one.keys() == eight.keys() == {2, 4}
  for s in one:
    assert one[s] == pytest.approx(eight[s], rel=1e-5)
  eps = metric_by_step(one_device_run, "dp_epsilon")
  assert 0 < eps[1] < eps[2] < eps[4] < math.inf
  # Negative control: other noise, other result.
  c2 = _dp_config(text_file, data_dir, **{"optimizer.dp.noise_multiplier": 3.0})
  train.train_and_evaluate(c2, str(tmp_path / "noisier"), jax.devices()[:1])
  assert metric_by_step(tmp_path / "noisier", "eval_loss")[4] != pytest.approx(one[4], rel=1e-5)


def test_dp_sgd_resumes_exactly_and_accumulation_adds_noise_once(tmp_path, text_file,
                                                                  data_dir, one_device_run):
  one = jax.devices()[:1]
  c = _dp_config(text_file, data_dir, **{"optimizer.grad_accum_steps": 2})
  train.train_and_evaluate(c, str(tmp_path / "full"), one)
  paused = _dp_config(text_file, data_dir, **{"optimizer.grad_accum_steps": 2,
                                               "stop_after_steps": 2})
  train.train_and_evaluate(paused, str(tmp_path / "resumed"), one)
  train.train_and_evaluate(c, str(tmp_path / "resumed"), one)
  for key in ("train_loss", "eval_loss"):
    assert metric_by_step(tmp_path / "resumed", key) == metric_by_step(tmp_path / "full", key)
  # Two microbatches, noise once: the same as one batch (noise per microbatch would differ).
  a, b = (metric_by_step(w, "eval_loss") for w in (tmp_path / "full", one_device_run))
  assert a[4] == pytest.approx(b[4], rel=1e-5)


def test_bad_dp_settings_fail_in_validate():
  c = config_lib.base_config()
  c.optimizer.dp.enabled, c.optimizer.dp.l2_clip = True, 0.0
  with pytest.raises(config_lib.ConfigError, match="optimizer.dp.*Fix"):
    config_lib.validate(c, 1)
  c = config_lib.base_config()
  c.optimizer.dp.enabled, c.model.family = True, "ngram"
  with pytest.raises(config_lib.ConfigError, match="neural family"):
    config_lib.validate(c, 1)


def test_dataset_windows_reads_the_texts_it_is_given(text_file, data_dir):
  """The run hands its opened dataset's texts to the accountant; the same count as reading
  `config.data` itself, and other texts give another count (the texts are really used)."""
  from jaxlm.data import sources
  from jaxlm.data.tokenizers import ByteTokenizer

  c = _dp_config(text_file, data_dir)
  tok = ByteTokenizer()
  own = dp.dataset_windows(c, tok)
  handed = dp.dataset_windows(c, tok, sources.DataSource(c.data).texts(c.data.train_split))
  assert handed == own > 1
  assert dp.dataset_windows(c, tok, ["x" * (10 * c.data.seq_len)]) == 10 != own
