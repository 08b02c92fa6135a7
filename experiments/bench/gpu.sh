#!/usr/bin/env bash
# MFU of GPT-2 small's train step on one GPU, in under 5 minutes (issue #16).
#
#   bash experiments/bench/gpu.sh [OUT_DIR]      # default: experiments/bench/results/gpu
#
# Two runs of `python -m jaxlm.lab.bench` (throughput mode: compile, 5 warm-up steps, STEPS
# timed steps, a 5-step profile) on configs/gpt2_small.py (12 layers x 768, 12 heads, seq
# 1024, bf16 compute with fp32 master weights, scanned layers, dots_saveable remat) with
# BATCH rows, one with XLA's attention and one with cuDNN's fused attention
# (`model.attention_impl=cudnn` through jax.nn.dot_product_attention). Data: the embedded
# corpus, byte tokenizer (vocabulary 256, so the output projection is 768 x 256, not GPT-2's
# 768 x 50304: model FLOPs count what runs). MFU = model FLOPs/s over PEAK_FLOPS, the GPU's
# dense bf16 peak (default 989e12: H200 SXM; H100 SXM is also 989e12, A100 312e12).
# Each run writes OUT_DIR/gpt2_small_<attention>.json and prints its table.
#
# Needs a CUDA build of JAX (`pip install -U "jax[cuda12]"`); without a GPU it stops and
# says so. JAXLM_GPU_SH_SMOKE=1 runs the same plumbing on CPU with the `:smoke` config
# (tests/test_bench.py), writing nothing under experiments/.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-experiments/bench/results/gpu}
BATCH=${BATCH:-32}
STEPS=${STEPS:-20}
PEAK_FLOPS=${PEAK_FLOPS:-989e12}
PER_RUN_S=${PER_RUN_S:-140}
PY=${PYTHON:-python}

if [[ "${JAXLM_GPU_SH_SMOKE:-}" == "1" ]]; then
  CONFIG="configs/gpt2_small.py:smoke"; IMPLS="xla"; BATCH=8; STEPS=2; PEAK_FLOPS=113e9
  EXTRA=(--config.model.dtype=float32)
else
  CONFIG="configs/gpt2_small.py"; IMPLS="xla cudnn"; EXTRA=()
  if ! "$PY" -c "import jax, sys; sys.exit(jax.devices()[0].platform != 'gpu')"; then
    echo "gpu.sh: no GPU visible to JAX ($("$PY" -c 'import jax; print(jax.devices())' 2>&1 | tail -1))." >&2
    echo "Fix: run on a GPU host with a CUDA build of JAX: pip install -U \"jax[cuda12]\"." >&2
    exit 2
  fi
  "$PY" -c "import jax; d = jax.devices()[0]; print('device:', d.device_kind, '| jax', jax.__version__)"
fi
mkdir -p "$OUT"
for impl in $IMPLS; do
  attn=(--config.model.attention_impl="$impl")
  echo "== GPT-2 small, attention=$impl, batch $BATCH x 1024, $STEPS steps"
  timeout "$PER_RUN_S" "$PY" -m jaxlm.lab.bench --config="$CONFIG" \
    --config.data.batch_size="$BATCH" --config.data.tokenizer=byte "${attn[@]}" "${EXTRA[@]}" \
    --steps="$STEPS" --warmup=5 --profile_steps=5 --peak_flops="$PEAK_FLOPS" \
    --out="$OUT/gpt2_small_${impl}.json" \
    || echo "gpu.sh: attention=$impl failed or passed ${PER_RUN_S}s (exit $?); see above." >&2
done
"$PY" - "$OUT" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "gpt2_small_*.json"))):
  r = json.load(open(f))
  print(f"{os.path.basename(f)}: {r['tokens_per_s']:,.0f} tokens/s, step "
        f"{r['step_time_median_s'] * 1e3:.1f} ms, MFU {100 * r['mfu']:.1f}%")
PY
