"""SST-2 sentiment: fine-tune a pretrained LM with a classification head (or pretrain it).

  # The recipe (experiments/pretrain_finetune): an LSTM LM on the SST-2 training sentences
  # (labels unused), then the LSTM classifier from it; drop init_from to train from scratch:
  python -m jaxlm.main --config=configs/sst2_finetune.py:pretrain,lstm --workdir=/tmp/sst2_pre
  python -m jaxlm.main --config=configs/sst2_finetune.py:lstm --workdir=/tmp/sst2_ft \
      --config.init_from=/tmp/sst2_pre
  # Evaluate the best checkpoint on dev (accuracy, P/R/F1, confusion matrix):
  python -m jaxlm.main --config=configs/sst2_finetune.py:lstm --workdir=/tmp/sst2_ft \
      --mode=eval --step=best
  # Without `lstm`: the same two steps with a 2-layer GPT (64 wide).

Data: GLUE SST-2 TSV (`sentence<TAB>label`, 0 = negative, 1 = positive) from
../shared/data/sst2; dev.tsv is the validation split. The same recipe reads the
tfds version with --config.data.name=glue/sst2 --config.data.path='' (prepared
offline). Variants (comma-separated): `pretrain`, `lstm` (one LSTM layer of 256, mean of
its outputs -> linear; with `pretrain`, the same LSTM as an LM), `bow` (the bag-of-embeddings
baseline: no Transformer blocks, no positions, mean of the word embeddings -> linear;
give it the pretraining run's vocabulary with --config.data.tokenizer_path=/tmp/sst2_pre),
`bert` (bidirectional encoder, [CLS] pooling; needs the bert family), `smoke` (a minute
on a laptop). Results and the pretrained-vs-scratch-vs-bag-of-words comparison:
experiments/pretrain_finetune.
"""

from jaxlm.config import base_config

SST2 = "../shared/data/sst2"


def get_config(arg: str | None = None):
  args = set((arg or "").split(","))
  c = base_config()
  d = c.data
  d.name = ""
  d.path = f"{SST2}/train.tsv"
  d.format = "tsv"
  d.text_key = "sentence"
  d.tokenizer = "word"
  d.word_min_count = 2  # Every word seen twice (14k words; a 5k cap cost ~2 points).
  d.batch_size = 64
  d.seq_len = 32  # SST-2 sentences average ~19 words; longer ones are cut.
  m = c.model
  m.num_layers = 2
  m.num_heads = 4
  m.emb_dim = 64
  m.mlp_dim = 256
  m.dropout = 0.1
  if "bert" in args:
    m.family = "bert"
    m.causal = False
  o = c.optimizer
  o.learning_rate = 1e-3
  o.warmup_steps = 100
  o.weight_decay = 0.01
  c.sample.num_tokens = 0
  c.log_every_steps = 25
  if "pretrain" in args:  # Next-token (or MLM for bert) pretraining on the sentences alone.
    d.doc_unit = "line"
    d.val_fraction = 0.02
    c.num_train_steps = 1500  # ~3M tokens, ~4 passes over the sentences.
    c.eval_every_steps = 500
    c.eval_steps = 20
    c.checkpoint_every_steps = 500
    c.sample.num_tokens = 20
    c.sample.prompt = "this movie is"
  else:
    d.eval_path = f"{SST2}/dev.tsv"
    d.label_key = "label"
    d.num_classes = 2
    c.finetune.task = "classify"
    c.finetune.best_metric = "accuracy"
    c.finetune.patience = 0
    c.finetune.pooling = "mean"  # Mean of the final hidden states (above 'last' here).
    c.num_train_steps = 3000  # ~2.9 epochs of the 67k training phrases.
    c.eval_every_steps = 500
    c.checkpoint_every_steps = 500
    c.keep_checkpoints = 2
  if "lstm" in args:  # The recipe: one LSTM layer of 256, mean of its outputs -> linear.
    m.family = "lstm"
    m.num_layers = 1
    m.emb_dim = 256
    m.dropout = 0.3
    if "pretrain" in args:  # Its 14k-word softmax is most of the cost: ~1.2 passes, ~8 min.
      c.num_train_steps = 400
      c.eval_every_steps = c.checkpoint_every_steps = 400
      o.warmup_steps = 50
    else:
      d.seq_len = 48  # Whole sentences: dev's longest is 47 words + <eos> (10% exceed 31).
      c.num_train_steps = 1500  # ~1.4 epochs: dev accuracy peaks near here.
      c.eval_every_steps = 250
  if "bow" in args:  # Bag of embeddings: embeddings -> final norm -> mean -> linear.
    m.num_layers = 0
    m.position = "none"
  if "smoke" in args:
    c.num_train_steps = 20
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
    c.eval_steps = 2
    o.warmup_steps = 5
  return c
