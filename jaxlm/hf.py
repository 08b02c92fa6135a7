"""Interchange: Hugging Face GPT-2 checkpoints in and out, and plain safetensors params.

  python -m jaxlm.hf export --workdir=/tmp/jaxlm --out=/tmp/jaxlm_hf     # HF GPT-2 dir
  python -m jaxlm.hf import --hf_dir=/tmp/jaxlm_hf --workdir=/tmp/ft     # a jaxlm workdir
  python -m jaxlm.hf params --workdir=/tmp/jaxlm --out=/tmp/params.safetensors

A `gpt` model is GPT-2-compatible when it has learned positions, pre-norm
LayerNorm, the GELU MLP (jaxlm's `nn.gelu` is the tanh approximation, HF's
`gelu_new`), biases, tied embeddings, dot-product MHA and no sliding window.
Vocabulary: ids are the model's own; jaxlm pads the embedding table to a multiple of
`model.vocab_multiple`, and export keeps only the `vocab_size` real rows (HF
`vocab_size` = the jaxlm tokenizer's). The jaxlm tokenizer is copied to
`jaxlm_tokenizer/` in the HF dir, so `import` restores a workdir that generates
text. Importing OpenAI's GPT-2 gives its BPE ids (no jaxlm tokenizer): use the params
from Python with ids from a GPT-2 tokenizer, with `vocab_multiple=1`, `norm_eps=1e-5`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import jax
import numpy as np

from jaxlm.layers.transformer import TransformerConfig

HF_WEIGHTS = "model.safetensors"
TOKENIZER_DIR = "jaxlm_tokenizer"


def check_gpt2_compatible(cfg: TransformerConfig) -> None:
  want = {"position": "learned", "norm": "layernorm", "norm_position": "pre", "mlp": "gelu",
          "use_bias": True, "tie_embeddings": True, "attention": "dot", "causal": True,
          "sliding_window": 0}
  bad = [f"model.{k}={getattr(cfg, k)!r} (GPT-2 needs {v!r})" for k, v in want.items()
         if getattr(cfg, k) != v]
  if cfg.num_kv_heads not in (0, cfg.num_heads):
    bad.append(f"model.num_kv_heads={cfg.num_kv_heads} (GPT-2 has full multi-head attention)")
  if cfg.dims_per_head * cfg.num_heads != cfg.emb_dim:
    bad.append(f"model.head_dim={cfg.head_dim} (GPT-2 needs heads * head_dim = emb_dim)")
  if bad:
    raise ValueError("Not a GPT-2-compatible model: " + "; ".join(bad) + ". Fix: export a "
                     "model trained with those settings (plain params export works for any).")


def _layers(stack: dict, n: int) -> list[dict]:
  if "layers" in stack:  # scan_layers: one stacked tree with a leading layer axis.
    return [jax.tree.map(lambda x, i=i: x[i], stack["layers"]) for i in range(n)]
  return [stack[f"layer_{i}"] for i in range(n)]


def to_hf(params, cfg: TransformerConfig) -> tuple[dict, dict[str, np.ndarray]]:
  """(HF GPT-2 config.json dict, state-dict tensors) of a compatible model."""
  check_gpt2_compatible(cfg)
  p = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), params)
  d = cfg.emb_dim
  t = {"transformer.wte.weight": p["embed"]["embedding"][:cfg.vocab_size],
       "transformer.wpe.weight": p["pos"]["pos_embedding"],
       "transformer.ln_f.weight": p["final_norm"]["scale"],
       "transformer.ln_f.bias": p["final_norm"]["bias"]}
  for i, lp in enumerate(_layers(p["stack"], cfg.num_layers)):
    h, a, m = f"transformer.h.{i}.", lp["attn"], lp["mlp"]
    t[h + "ln_1.weight"], t[h + "ln_1.bias"] = lp["norm1"]["scale"], lp["norm1"]["bias"]
    t[h + "ln_2.weight"], t[h + "ln_2.bias"] = lp["norm2"]["scale"], lp["norm2"]["bias"]
    if "qkv" in a:  # model.fused_qkv: [D, 3, H, E] is already GPT-2's c_attn column order.
      t[h + "attn.c_attn.weight"] = a["qkv"]["kernel"].reshape(d, 3 * d)
      t[h + "attn.c_attn.bias"] = a["qkv"]["bias"].reshape(3 * d)
    else:
      t[h + "attn.c_attn.weight"] = np.concatenate(
          [a[n]["kernel"].reshape(d, d) for n in ("query", "key", "value")], axis=1)
      t[h + "attn.c_attn.bias"] = np.concatenate(
          [a[n]["bias"].reshape(d) for n in ("query", "key", "value")])
    t[h + "attn.c_proj.weight"] = a["out"]["kernel"].reshape(d, d)
    t[h + "attn.c_proj.bias"] = a["out"]["bias"]
    t[h + "mlp.c_fc.weight"], t[h + "mlp.c_fc.bias"] = m["wi"]["kernel"], m["wi"]["bias"]
    t[h + "mlp.c_proj.weight"], t[h + "mlp.c_proj.bias"] = m["wo"]["kernel"], m["wo"]["bias"]
  config = {
      "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
      "n_positions": cfg.max_len, "n_ctx": cfg.max_len, "n_embd": d, "n_layer": cfg.num_layers,
      "n_head": cfg.num_heads, "n_inner": cfg.mlp_dim, "activation_function": "gelu_new",
      "layer_norm_epsilon": cfg.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
      "attn_pdrop": 0.0, "initializer_range": 0.02, "scale_attn_weights": True,
      "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
      "torch_dtype": "float32", "use_cache": True,
  }
  return config, {k: np.ascontiguousarray(v) for k, v in t.items()}


def from_hf(config: dict, tensors: dict[str, np.ndarray],
            vocab_multiple: int = 1) -> tuple[TransformerConfig, dict]:
  """A jaxlm `TransformerConfig` and params from an HF GPT-2 config + state dict."""
  if config.get("model_type", "gpt2") != "gpt2":
    raise ValueError(f"model_type={config.get('model_type')!r}: only GPT-2 checkpoints import.")
  act = config.get("activation_function", "gelu_new")
  if act not in ("gelu_new", "gelu_pytorch_tanh"):
    raise ValueError(f"activation_function={act!r}: jaxlm's GELU is the tanh approximation "
                     "(gelu_new); this checkpoint would not give the same outputs.")
  t = {k.removeprefix("transformer."): np.asarray(v, np.float32) for k, v in tensors.items()}
  d, n_head, n_layer = config["n_embd"], config["n_head"], config["n_layer"]
  vocab = config["vocab_size"]
  tied = "lm_head.weight" not in t or np.array_equal(t["lm_head.weight"], t["wte.weight"])
  cfg = TransformerConfig(
      vocab_size=vocab, vocab_multiple=vocab_multiple, num_layers=n_layer, num_heads=n_head,
      emb_dim=d, mlp_dim=config.get("n_inner") or 4 * d, max_len=config["n_positions"],
      position="learned", norm="layernorm", norm_position="pre", mlp="gelu", use_bias=True,
      tie_embeddings=tied, norm_eps=config.get("layer_norm_epsilon", 1e-5))
  e = d // n_head
  wte = np.zeros((cfg.padded_vocab, d), np.float32)
  wte[:vocab] = t["wte.weight"]
  params: dict = {"embed": {"embedding": wte}, "pos": {"pos_embedding": t["wpe.weight"]},
                  "final_norm": {"scale": t["ln_f.weight"], "bias": t["ln_f.bias"]},
                  "stack": {}}
  if not tied:
    head = np.zeros((d, cfg.padded_vocab), np.float32)
    head[:, :vocab] = t["lm_head.weight"].T
    params["lm_head"] = {"kernel": head}
  for i in range(n_layer):
    h = f"h.{i}."
    qkv_w = np.split(t[h + "attn.c_attn.weight"], 3, axis=1)
    qkv_b = np.split(t[h + "attn.c_attn.bias"], 3)
    attn = {n: {"kernel": w.reshape(d, n_head, e), "bias": b.reshape(n_head, e)}
            for n, w, b in zip(("query", "key", "value"), qkv_w, qkv_b, strict=True)}
    attn["out"] = {"kernel": t[h + "attn.c_proj.weight"].reshape(n_head, e, d),
                   "bias": t[h + "attn.c_proj.bias"]}
    params["stack"][f"layer_{i}"] = {
        "norm1": {"scale": t[h + "ln_1.weight"], "bias": t[h + "ln_1.bias"]},
        "norm2": {"scale": t[h + "ln_2.weight"], "bias": t[h + "ln_2.bias"]},
        "attn": attn,
        "mlp": {"wi": {"kernel": t[h + "mlp.c_fc.weight"], "bias": t[h + "mlp.c_fc.bias"]},
                "wo": {"kernel": t[h + "mlp.c_proj.weight"], "bias": t[h + "mlp.c_proj.bias"]}},
    }
  return cfg, params


def save_hf(params, cfg: TransformerConfig, out_dir: str, tokenizer_dir: str | None = None):
  """Writes `config.json` + `model.safetensors` (+ the jaxlm tokenizer) to `out_dir`."""
  from safetensors.numpy import save_file
  config, tensors = to_hf(params, cfg)
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config, f, indent=1)
  save_file(tensors, os.path.join(out_dir, HF_WEIGHTS), metadata={"format": "pt"})
  if tokenizer_dir:
    dst = os.path.join(out_dir, TOKENIZER_DIR)
    os.makedirs(dst, exist_ok=True)
    for name in os.listdir(tokenizer_dir):
      if name in ("tokenizer.json", "vocab.txt", "spm.model"):
        shutil.copy(os.path.join(tokenizer_dir, name), dst)


def load_hf(hf_dir: str, vocab_multiple: int = 1) -> tuple[TransformerConfig, dict]:
  """(config, params) from an HF GPT-2 directory (config.json + model.safetensors)."""
  from safetensors.numpy import load_file
  path = os.path.join(hf_dir, HF_WEIGHTS)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No {HF_WEIGHTS} in {hf_dir}. Fix: save the HF model with "
                            "save_pretrained(dir, safe_serialization=True).")
  with open(os.path.join(hf_dir, "config.json")) as f:
    config = json.load(f)
  return from_hf(config, load_file(path), vocab_multiple)


def save_params(params, path: str) -> int:
  """All params as one plain safetensors file, named by their path ('stack/layer_0/...')."""
  from jaxlm import quantize
  return quantize.save(params, path)


# ----------------------------------------------------------------------------- workdirs


def export_workdir(workdir: str, out_dir: str, step: int | None = None) -> None:
  from jaxlm import inference
  m = inference.load_for_inference(workdir, step)
  save_hf(m.params, m.model.cfg, out_dir, tokenizer_dir=workdir)


def import_to_workdir(hf_dir: str, workdir: str, seq_len: int | None = None) -> None:
  """A workdir (config.json, tokenizer.json, a step-0 params checkpoint) from an HF dir.

  `generate`, `serve` and fine-tuning (`init_from`) can then use it.
  """
  from jaxlm import checkpoint, inference
  from jaxlm.data import tokenizers as tok_lib
  cfg, params = load_hf(hf_dir)
  tok_src = os.path.join(hf_dir, TOKENIZER_DIR)
  if not os.path.exists(os.path.join(tok_src, "tokenizer.json")):
    raise FileNotFoundError(f"{hf_dir} has no {TOKENIZER_DIR}/ (it was not exported by jaxlm), "
                            "so its token ids have no jaxlm tokenizer. Fix: use "
                            "jaxlm.hf.load_hf from Python with the model's own tokenizer.")
  tok = tok_lib.load_tokenizer(tok_src)
  if tok.vocab_size != cfg.vocab_size:
    raise ValueError(f"{tok_src} has {tok.vocab_size} ids but the model has {cfg.vocab_size}.")
  tok.save(workdir)
  from jaxlm.config import base_config
  c = base_config()
  for k in ("num_layers", "num_heads", "emb_dim", "mlp_dim", "max_len", "vocab_multiple",
            "norm_eps", "tie_embeddings"):
    c.model[k] = getattr(cfg, k)
  c.data.tokenizer = tok.kind
  c.data.seq_len = min(seq_len or cfg.max_len, cfg.max_len)
  inference.save_config(c, workdir)
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  state = {"step": np.zeros((), np.int32), "params": params}
  ckpt.save(0, state, {}, {"tokenizer": tok.identity(), "config": checkpoint.flat_config(c),
                           "imported_from": os.path.abspath(hf_dir)})
  ckpt.close()


def main(argv=None) -> int:
  from absl import flags
  argv = list(argv if argv is not None else sys.argv)
  f = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "jaxlm workdir (source, or destination of import).",
                      flag_values=f)
  flags.DEFINE_string("out", None, "Output directory (export) or file (params).", flag_values=f)
  flags.DEFINE_string("hf_dir", None, "HF GPT-2 directory (import).", flag_values=f)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=f)
  rest = f(argv)
  cmd = rest[1] if len(rest) > 1 else ""
  try:
    if cmd == "export" and f.workdir and f.out:
      export_workdir(f.workdir, f.out, f.step)
    elif cmd == "import" and f.hf_dir and f.workdir:
      import_to_workdir(f.hf_dir, f.workdir)
    elif cmd == "params" and f.workdir and f.out:
      from jaxlm import inference
      save_params(inference.load_for_inference(f.workdir, f.step).params, f.out)
    else:
      print("usage: python -m jaxlm.hf export --workdir=W --out=DIR | import --hf_dir=DIR "
            "--workdir=W | params --workdir=W --out=FILE.safetensors", file=sys.stderr)
      return 2
  except (ValueError, OSError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"{cmd}: done")
  return 0


if __name__ == "__main__":
  sys.exit(main())
