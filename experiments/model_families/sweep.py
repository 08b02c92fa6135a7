"""Model families on one corpus and tokenizer: Kneser-Ney n-grams (orders 2-5), LSTM, GPT.

  JAXLM_SHARED_DATA=/path/to/shared/data python -m jaxlm.lab.sweep experiments/model_families

Word-level WikiText-2 (the families' `:wikitext2` recipe variant: valid.txt, last 10% of
its lines held out, word tokenizer trained on the rest); LSTM and GPT at matched total
parameter counts (1.95M and 2.08M, 6.6% apart; embeddings dominate at this vocabulary).
"""

from jaxlm.lab.sweep import Sweep

# Neural runs: the recipes' 600 steps (batch 32 x 64 words, ~5.5 epochs of the 0.2M training
# words), dropout 0.1 for both (a small corpus), evaluated on the whole held-out split.
NEURAL = {
    "num_train_steps": 600,
    "eval_every_steps": 100,
    "eval_steps": -1,
    "checkpoint_every_steps": 600,
    "log_every_steps": 50,
    "optimizer.warmup_steps": 50,
    "model.num_layers": 2,
    "model.emb_dim": 128,
    "model.dropout": 0.1,
    "sample.num_tokens": 0,
}
NGRAM = "configs/ngram.py:wikitext2"


def get_sweep():
  return Sweep(
      variants={
          **{f"kn-{n}gram": {"config": NGRAM, "ngram.order": n} for n in (2, 3, 4, 5)},
          # LSTM recipe: Adam lr 1e-2, tied embeddings, state carried across windows.
          "lstm": {"config": "configs/lstm.py:wikitext2", **NEURAL},
          # GPT recipe: learned positions, 4 heads of 32, MLP 512; lr 2e-3 (cosine), the
          # small-GPT rate of configs/default.py (the base 1e-3 is slow for 600 steps).
          "gpt": {"config": "configs/gpt.py:wikitext2", **NEURAL, "model.num_heads": 4,
                  "model.mlp_dim": 512, "optimizer.learning_rate": 2e-3},
      },
      seeds=1,
      metric="eval_ppl",
      columns=("eval_loss", "eval_bpb"),
      description="The history of LMs as one table: word-level WikiText-2, same split and "
                  "tokenizer for every family.",
  )
