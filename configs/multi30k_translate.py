"""Multi30k English -> German as a prompted decoder-only LM (`en <sep> de <eos>`).

  python -m jaxlm.main --config=configs/multi30k_translate.py --workdir=/tmp/m30k
  # BLEU/chrF of greedy translations on test_2016_flickr (or --split=validation for val):
  python -m jaxlm.main --config=configs/multi30k_translate.py:test --workdir=/tmp/m30k \
      --mode=eval --step=best

The loss covers the German side only; evaluation translates greedily and scores
with sacrebleu (corpus BLEU, chrF). Files: ../shared/data/multi30k/{train,val,
test_2016_flickr}.{en,de}, line-aligned. Start from a pretrained decoder with
--config.init_from=WORKDIR (same model.* and tokenizer). Variants
(comma-separated): `test` (the eval split is test_2016_flickr), `smoke` (a
minute on a laptop).
"""

from jaxlm.config import base_config

M30K = "../shared/data/multi30k"


def get_config(arg: str | None = None):
  args = set((arg or "").split(","))
  c = base_config()
  d = c.data
  d.name = ""
  d.format = "parallel"
  d.path = f"{M30K}/train.en"
  d.target_path = f"{M30K}/train.de"
  evalset = "test_2016_flickr" if "test" in args else "val"
  d.eval_path = f"{M30K}/{evalset}.en"
  d.eval_target_path = f"{M30K}/{evalset}.de"
  d.tokenizer = "spm"  # One joint en+de SentencePiece model, trained on the training pairs.
  d.vocab_size = 4000
  d.batch_size = 64
  d.seq_len = 64  # Source and target of 99% of the pairs fit whole.
  m = c.model
  m.num_layers = 3
  m.num_heads = 4
  m.emb_dim = 192
  m.mlp_dim = 768
  m.dropout = 0.1
  o = c.optimizer
  o.learning_rate = 1.5e-3
  o.warmup_steps = 200
  o.weight_decay = 0.01
  c.num_train_steps = 2100  # ~4.6 epochs of the 29k pairs: ~1.2 s a step on 2 CPU cores.
  c.eval_every_steps = 300
  c.checkpoint_every_steps = 300
  c.sample.num_tokens = 0
  f = c.finetune
  f.task = "seq2seq"
  f.best_metric = "bleu"
  f.max_decode_len = 64
  f.eval_generate = 300  # Translated at each training eval (eval mode translates all).
  if "smoke" in args:
    d.tokenizer = "char"
    d.batch_size = 16
    d.seq_len = 128
    m.num_layers = 2
    m.emb_dim = 64
    m.mlp_dim = 256
    o.warmup_steps = 5
    c.num_train_steps = 20
    c.eval_every_steps = 10
    c.checkpoint_every_steps = 10
    f.max_decode_len = 8
    f.eval_generate = 16
  return c
