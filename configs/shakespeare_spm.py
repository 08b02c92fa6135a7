"""Subword GPT on tiny-shakespeare with a SentencePiece BPE vocabulary of 1,024 pieces.

  python -m jaxlm.main --config=configs/shakespeare_spm.py --workdir=/tmp/shk_spm \
      --config.data.path=../shared/data/tinyshakespeare/input.txt

The SentencePiece model is trained on the training split (first 90% of the
characters) on the first run, saved as `spm.model` in the workdir and reused on
resume (or load one with `--config.data.tokenizer_path=DIR_OR_spm.model`).
`--config.data.spm_model_type=unigram` for a unigram model. Variant `:smoke`
trains for seconds.
"""

from jaxlm.config import base_config


def get_config(arg: str | None = None):
  c = base_config()
  d = c.data
  d.name = ""
  d.path = "../shared/data/tinyshakespeare/input.txt"
  d.doc_unit = "paragraph"
  d.val_split = "tail"
  d.val_fraction = 0.1
  d.tokenizer = "spm"
  d.vocab_size = 1024
  d.spm_model_type = "bpe"
  d.batch_size = 12
  d.seq_len = 64
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.emb_dim = 128
  c.model.mlp_dim = 512
  c.optimizer.b2 = 0.99
  c.num_train_steps = 2000
  c.eval_every_steps = 250
  c.eval_steps = 50
  c.checkpoint_every_steps = 500
  c.sample.prompt = "ROMEO:\n"
  c.sample.num_tokens = 80
  if arg == "smoke":
    c.num_train_steps = 20
    c.log_every_steps = 5
    c.eval_every_steps = 10
    c.eval_steps = 2
    c.checkpoint_every_steps = 10
    d.vocab_size = 512
    d.batch_size = 8
    d.seq_len = 32
    c.model.num_layers = 2
    c.model.emb_dim = 32
    c.model.mlp_dim = 64
    c.sample.num_tokens = 8
  return c
