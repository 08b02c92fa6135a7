"""The one base config: every field is defined and commented here, once.

Recipes in `configs/` start from `base_config()` and change what they need; the checks of
these fields are in `checks.py`.
"""

from __future__ import annotations

import ml_collections

from jaxlm.data import augment
from jaxlm.data.cleaning import clean_config

# Mesh axes, outermost first. Rules below map the model's logical axis names to these.
MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis name -> mesh axes. Parameters: shard the embedding dim over fsdp, the
# vocab/mlp/heads dims over tensor. Activations: batch over data+fsdp, heads/mlp over tensor.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("layers", None),
    ("act_batch", ("data", "fsdp")),
    ("act_seq", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


# config.model.family values: causal Transformer, masked-LM encoder, LSTM LM, Kneser-Ney n-gram.
FAMILIES = ("gpt", "bert", "lstm", "ngram")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # Seeds init, data order and dropout; a resumed run replays the same randomness.
  c.num_train_steps = 1000
  c.log_every_steps = 50  # Progress line + train metrics in metrics.jsonl.
  c.eval_every_steps = 250  # Also evaluated at the last step.
  c.eval_steps = -1  # Eval batches per evaluation; -1 = the whole eval split.
  c.checkpoint_every_steps = 500  # Also saved at the last step.
  c.keep_checkpoints = 3  # Latest N kept (at least 2 so a corrupt latest can fall back).
  c.cpu_devices = 0  # CPU only: split the host into N JAX devices (one per core); 0 = JAX default.
  # For MFU; per accelerator, or per host on CPU (113e9: fp32 matmul peak of a 2-core CPU).
  c.peak_flops_per_device = 113e9
  c.nan_policy = "stop"  # Non-finite loss/grad: stop | skip (the update) | rollback (to the
  # last checkpoint, skipping the data since). See jaxlm/resilience.py.
  c.nan_max_retries = 5  # skip: consecutive skipped steps; rollback: rollbacks; then stop.
  c.init_from = ""  # Workdir/checkpoint of a pretrained run to start from (fine-tuning).
  c.mode = "train"  # train | eval (the --mode flag overrides).
  c.stop_after_steps = 0  # Pause after this step (eval + checkpoint; schedule unchanged); 0 = off.

  c.data = d = ml_collections.ConfigDict()
  d.name = "jaxlm_stdlib_docs"  # tfds dataset name; the default is the embedded corpus.
  d.path = ""  # Local text file(s)/glob(s), comma-separated; overrides data.name.
  d.data_dir = ""  # tfds data dir; '' = tfds default (~/tensorflow_datasets or $TFDS_DATA_DIR).
  d.train_split = "train"
  d.eval_split = "validation"
  d.text_key = "text"  # Feature (tfds) holding the text.
  d.doc_unit = "file"  # Local text: a document is a 'file', a 'paragraph' (blank-line) or 'line'.
  d.val_fraction = 0.05  # Local text: share held out for validation.
  d.val_split = "hash"  # Local text: 'hash' (by document hash) or 'tail' (last val_fraction).
  d.tokenizer = "byte"  # byte | char (| word | spm).
  d.tokenizer_path = ""  # Load a saved tokenizer instead of building one.
  d.vocab_size = 8000  # spm only.
  d.spm_model_type = "unigram"  # spm only: unigram | bpe.
  d.word_min_count = 1  # word only.
  d.word_max_size = 0  # word only; 0 = unlimited.
  d.batch_size = 32  # Global batch, in sequences.
  d.shards = 0  # Data streams making up the batch, spread over processes; 0 = one per process.
  d.seq_len = 128  # Tokens per training sequence.
  d.document_attention = False  # Keep attention (and positions) within each document.
  d.shuffle = True  # Shuffle documents (by seed, reshuffled each epoch).
  d.prefetch = 2  # Batches prepared ahead on a background thread.
  # Local files (data.path): format and fields. Every source yields examples with 'text', plus
  # 'label' (int id) when label_key is set and 'target' for parallel pairs / target_key.
  d.format = "text"  # text | jsonl | tsv | csv (header row) | parallel (line-aligned pairs).
  d.label_key = ""  # jsonl field / table column / tfds feature holding a label; '' = none.
  d.labels = ()  # Label names, id = position (e.g. ('neg', 'pos')); else see num_classes.
  d.num_classes = 0  # Integer labels 0..n-1 (used when data.labels is empty).
  d.target_key = ""  # Field/column/tfds feature of a second text (e.g. 'de'); '' = none.
  d.target_path = ""  # parallel: target file(s), line-aligned with data.path, same order.
  d.eval_path = ""  # Local file(s) for the validation split; '' = split data.path instead.
  d.eval_target_path = ""  # parallel: target file(s) aligned with data.eval_path.
  d.encoding_errors = "replace"  # Non-UTF-8 bytes: replace (by U+FFFD, counted) | strict.
  d.packing = "pack"  # pack (concatenate documents) | pad (one document per row, padded).
  d.truncate = True  # pad: cut documents longer than seq_len+1 tokens; False = error.
  d.read_threads = 0  # grain threads reading+tokenizing ahead; 0 = in the pipeline's thread.
  d.read_buffer = 16  # Documents read ahead when read_threads > 0.
  # Tokenize the training split once at start when its prepared size is at most this many MB
  # (0: never): the same batches, less host work per step. Token ids take 4 bytes each.
  d.cache_tokens_mb = 64
  d.word_lowercase = False  # word only.
  d.word_eos_per_line = True  # word only: each newline is an <eos> token.
  d.spm_max_sentences = 1_000_000  # spm only: training lines read at most.
  d.spm_max_chars = 100_000_000  # spm only: training characters read at most.
  # Cleaning (jaxlm.data.cleaning): applied when the dataset is prepared (on first use or by
  # `python -m jaxlm.prepare`), and part of the prepared dataset's hash.
  d.clean = clean_config()
  d.clean.enabled = False  # Off: documents are used as read.
  # bias: data steps for bias/privacy measurement (jaxlm.data.augment), in the dataset's hash.
  d.cda = augment.cda_config()  # Counterfactual data augmentation (gender swaps), after cleaning.
  d.canaries = augment.canaries_config()  # Secret-sharer canaries, inserted before cleaning.

  c.model = m = ml_collections.ConfigDict()
  m.family = "gpt"
  m.num_layers = 4
  m.num_heads = 4
  m.num_kv_heads = 0  # 0 = num_heads (MHA); 1 = MQA; in between = GQA.
  m.emb_dim = 128
  m.mlp_dim = 512
  m.head_dim = 0  # 0 = emb_dim // num_heads.
  m.max_len = 0  # Position-table size; 0 = data.seq_len.
  m.vocab_multiple = 128  # Pad the embedding table to a multiple of this (sharding, speed).
  m.position = "learned"  # none | learned | sinusoidal | rope | alibi.
  m.rope_base = 10000.0
  m.attention = "dot"  # Score: dot (scaled dot product) | bilinear (h_t^T W_a h_s).
  m.causal = True
  m.sliding_window = 0  # Attend to at most this many previous tokens; 0 = unlimited.
  m.norm = "layernorm"  # layernorm | rmsnorm.
  m.norm_position = "pre"  # pre | post.
  m.mlp = "gelu"  # gelu | relu | relu2 (squared ReLU) | swiglu.
  m.use_bias = True
  m.dropout = 0.0  # Residual/embedding dropout.
  m.attention_dropout = 0.0
  m.tie_embeddings = True
  m.dtype = "float32"  # Compute dtype (bfloat16 for mixed precision).
  m.param_dtype = "float32"  # Master weights.
  m.scan_layers = False  # nn.scan over layers: compile time independent of depth.
  m.remat = "none"  # none | full | dots_saveable.
  # Attention kernel: einsum (softmax of explicit scores) | xla | cudnn (jax.nn.
  # dot_product_attention's); '' = einsum on CPU (3-5% faster steps there), xla elsewhere.
  m.attention_impl = ""
  m.fused_qkv = False  # One [D, 3, H, E] q/k/v projection (MHA only); fewer, larger matmuls.
  m.norm_eps = 1e-6  # Norm epsilon; 1e-5 for Hugging Face GPT-2 weights (see jaxlm.hf).
  m.type_vocab_size = 0  # bert: segment/type embeddings (alternate packed documents); 0 = off.
  m.lstm_hidden_dim = 0  # lstm: state width; 0 = emb_dim.
  m.carry_state = False  # lstm: carry the state across windows (truncated BPTT) of B data lanes.
  # LSTM LM init and speed (configs/ptb.py; jaxlm/layers/lstm.py).
  m.init_scale = 0.0  # lstm: > 0 draws every weight from uniform(-init_scale, init_scale).
  m.lstm_unroll = 1  # lstm: scan steps unrolled per iteration (same results; speed only).

  c.mlm = ml_collections.ConfigDict()  # Masked LM (family bert).
  c.mlm.fraction = 0.15  # Share of (non-pad) tokens selected for prediction.
  c.mlm.mask_prob = 0.8  # Of the selected: replaced by <mask> ...
  c.mlm.random_prob = 0.1  # ... by a random token; the rest are kept unchanged.

  c.ngram = ml_collections.ConfigDict()  # Count-based Kneser-Ney LM (family ngram).
  c.ngram.order = 5

  c.optimizer = o = ml_collections.ConfigDict()
  o.learning_rate = 1e-3  # Peak.
  o.warmup_steps = 100
  o.schedule = "cosine"  # cosine | linear | constant (after warmup).
  o.end_lr_factor = 0.1  # Final LR = end_lr_factor * learning_rate.
  o.weight_decay = 0.1  # Not applied to norms, biases and embeddings.
  o.b1 = 0.9
  o.b2 = 0.95
  o.eps = 1e-8
  o.grad_clip = 1.0  # Global-norm clip; 0 = off.
  o.grad_accum_steps = 1  # Microbatches per step, inside the jitted step.
  # SGD and the epoch step decay of the classic LSTM LM recipes (configs/ptb.py).
  o.name = "adamw"  # adamw | sgd (plain, no momentum; weight_decay is then L2-style decoupled)
  # | muon (Transformer block matrices; everything else on AdamW at learning_rate).
  o.muon_learning_rate = 0.02  # muon: peak LR of the block matrices (same schedule shape).
  o.muon_beta = 0.95  # muon: momentum of the orthogonalized updates (Nesterov).
  o.steps_per_epoch = 0  # step_decay: optimizer steps per epoch (> 0).
  o.decay_start_epoch = 1  # step_decay: epochs 1..this run at the peak LR, then decay.
  o.decay_factor = 0.5  # step_decay: LR multiplier per epoch after decay_start_epoch.
  # DP-SGD (jaxlm/dp.py): per-example clipping + Gaussian noise, epsilon by dp-accounting.
  o.dp = ml_collections.ConfigDict()
  o.dp.enabled = False
  o.dp.l2_clip = 1.0  # Per-example gradient L2 clip norm.
  o.dp.noise_multiplier = 1.0  # Noise stddev = noise_multiplier * l2_clip (on the summed grads).
  o.dp.accountant = "rdp"  # rdp | pld (dp-accounting).
  o.dp.delta = 1e-5  # Epsilon is reported at this delta.
  o.dp.dataset_size = 0  # Training examples (sequences) for the sampling rate; 0 = estimate.

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = all remaining devices.
  c.mesh.rules = DEFAULT_RULES
  # CPU devices, data parallel only, a deterministic step: each device differentiates its rows
  # in a shard_map and ONE all-reduce sums the raveled gradient (XLA's CPU runtime meets once
  # per parameter array otherwise). Same results; False = XLA's per-parameter all-reduce.
  c.mesh.cpu_flat_allreduce = True

  c.sample = ml_collections.ConfigDict()
  c.sample.prompt = "The "  # Printed at the end of training.
  c.sample.num_tokens = 128
  c.sample.temperature = 0.8
  c.sample.top_k = 20

  # Fine-tuning and task evaluation (jaxlm/finetune.py); task 'lm' = plain LM training. Task
  # data come from config.data: classify needs data.label_key (+ labels or num_classes),
  # seq2seq data.format='parallel' (or data.target_key); data.packing is not used.
  c.finetune = f = ml_collections.ConfigDict()
  f.task = "lm"  # lm | classify | seq2seq.
  f.init_step = -1  # Step of config.init_from to start from; -1 = its latest checkpoint.
  f.pooling = "auto"  # classify: first | last | mean; auto = first (bert), last (gpt, lstm).
  f.head_dropout = 0.1  # classify: dropout on the pooled representation (and hidden layers).
  f.token_dropout = 0.0  # classify, mean pooling: P(a token is left out of the mean), training.
  f.head_layers = 0  # classify: hidden ReLU layers between the pooled vector and the logits.
  f.head_dim = 0  # classify: their width; 0 = the pooled vector's (the backbone's output).
  f.freeze_backbone = False  # Train only the new head.
  f.head_lr = 0.0  # Peak LR of the head; 0 = optimizer.learning_rate.
  f.layer_lr_decay = 1.0  # LR of layer i = lr * decay^(depth above it); 1 = off.
  f.best_metric = "accuracy"  # Kept in <workdir>/best: accuracy | macro_f1 | loss | bleu.
  f.patience = 0  # Stop after this many evals without a better best_metric; 0 = never.
  f.max_decode_len = 64  # seq2seq: generated tokens at most.
  f.eval_generate = 200  # seq2seq: examples translated at each training eval; -1 = all.
  return c


TASKS = ("lm", "classify", "seq2seq")  # finetune.task
POOLINGS = ("first", "last", "mean")  # finetune.pooling (jaxlm/heads.py), besides 'auto'.
BEST_METRICS = {"accuracy": 1, "macro_f1": 1, "f1": 1, "bleu": 1, "chrf": 1, "loss": -1}  # +1: max
