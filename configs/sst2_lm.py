"""Byte-level GPT on SST-2's sentences as unlabeled text (the labels are not read).

  python -m jaxlm.main --config=configs/sst2_lm.py --workdir=/tmp/sst2lm \
      --config.data.path=../shared/data/sst2/train.tsv \
      --config.data.eval_path=../shared/data/sst2/dev.tsv

The TSV's `sentence` column is the text (one sentence = one document);
sentences are short, so they are packed many to a window with attention and
positions kept inside each sentence (`data.document_attention`). For
classification on the labels see `data.label_key`, `data.num_classes` and
`data.packing='pad'`. Variant `:smoke` trains for seconds.
"""

from jaxlm.config import base_config


def get_config(arg: str | None = None):
  c = base_config()
  d = c.data
  d.name = ""
  d.path = "../shared/data/sst2/train.tsv"
  d.eval_path = "../shared/data/sst2/dev.tsv"
  d.format = "tsv"
  d.text_key = "sentence"
  d.tokenizer = "byte"
  d.document_attention = True
  d.batch_size = 32
  d.seq_len = 128
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.emb_dim = 128
  c.model.mlp_dim = 512
  c.num_train_steps = 1000
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 500
  c.sample.prompt = "this movie is "
  c.sample.num_tokens = 60
  if arg == "smoke":
    c.num_train_steps = 20
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.eval_steps = 2
    c.checkpoint_every_steps = 10
    d.batch_size = 8
    d.seq_len = 32
    c.model.num_layers = 2
    c.model.emb_dim = 32
    c.model.mlp_dim = 64
    c.sample.num_tokens = 8
  return c
