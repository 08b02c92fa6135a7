"""Character-level GPT on tiny-shakespeare (nanoGPT's CPU recipe shape).

  python -m jaxlm.main --config=configs/shakespeare_char.py --workdir=/tmp/shakespeare \
      --config.data.path=../shared/data/tinyshakespeare/input.txt

Split as usual: first 90% of the characters train, last 10% validate. Documents
are blank-line-separated speeches, shuffled and packed.
"""

from jaxlm.config import base_config


def get_config(arg: str | None = None):
  c = base_config()
  c.data.name = ""
  c.data.path = "../shared/data/tinyshakespeare/input.txt"
  c.data.doc_unit = "paragraph"
  c.data.val_split = "tail"
  c.data.val_fraction = 0.1
  c.data.tokenizer = "char"
  c.data.batch_size = 12
  c.data.seq_len = 64
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.emb_dim = 128
  c.model.mlp_dim = 512
  c.optimizer.learning_rate = 1e-3
  c.optimizer.b2 = 0.99
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 0.1
  c.num_train_steps = 2000
  c.eval_every_steps = 250
  c.eval_steps = 50
  c.checkpoint_every_steps = 500
  c.sample.prompt = "ROMEO:\n"
  c.sample.num_tokens = 200
  if arg == "smoke":
    c.num_train_steps = 20
    c.eval_every_steps = 10
    c.eval_steps = 2
    c.checkpoint_every_steps = 10
  return c
