"""Word-level GPT on WikiText-2 (the PTB/WikiText word-LM setting, with `<unk>` and `<eos>`).

  python -m jaxlm.main --config=configs/wikitext2_word.py --workdir=/tmp/wt2 \
      --config.data.path=../shared/data/wikitext-2/valid.txt \
      --config.data.eval_path=../shared/data/wikitext-2/test.txt

Only WikiText-2's valid and test files are available here, so valid trains and
test evaluates (read ../shared/data/README.md). Each file is one document read
in order; every newline is an `<eos>` token. The vocabulary is built from the
training file, so test words never seen there are `<unk>` (as are the
dataset's own rare words). Variant `:smoke` trains for seconds.
"""

from jaxlm.config import base_config


def get_config(arg: str | None = None):
  c = base_config()
  d = c.data
  d.name = ""
  d.path = "../shared/data/wikitext-2/valid.txt"
  d.eval_path = "../shared/data/wikitext-2/test.txt"
  d.doc_unit = "file"
  d.tokenizer = "word"
  d.word_min_count = 1
  d.word_eos_per_line = True
  d.batch_size = 32
  d.seq_len = 64
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.emb_dim = 128
  c.model.mlp_dim = 512
  c.model.dropout = 0.1
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.num_train_steps = 2000
  c.eval_every_steps = 250
  c.checkpoint_every_steps = 500
  c.sample.prompt = "The "
  c.sample.num_tokens = 40
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
