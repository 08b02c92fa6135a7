"""CDA vs no CDA: a word-level GPT on WikiText-2, 3 seeds each; then CrowS-Pairs scores.

  python -m jaxlm.lab.sweep experiments/bias_cda --parallel=2
  python experiments/bias_cda/report.py        # CrowS-Pairs of every run + the tables

Same data (wikitext-2 valid.txt, one document per paragraph; test.txt evaluates), same steps
and seeds; the CDA arm adds a gender-swapped copy of every training paragraph with a
gendered word (`data.cda.mode=add`, jaxlm/data/cda_words.py). Small (2 cores): 2 layers
of 64, 400 steps of 16 x 64 words (410k words: about 2 epochs of valid.txt's 0.22M, 1.5 of
the CDA arm's); validation on the first 40 batches (41k words) of test.txt.
"""

from jaxlm.lab.sweep import Sweep

BASE = {
    "data.doc_unit": "paragraph",
    "data.batch_size": 16,
    "num_train_steps": 400,
    "eval_every_steps": 200,
    "eval_steps": 40,
    "checkpoint_every_steps": 200,
    "log_every_steps": 50,
    "optimizer.warmup_steps": 20,
    "optimizer.learning_rate": 2e-3,
    "model.num_layers": 2,
    "model.num_heads": 2,
    "model.emb_dim": 64,
    "model.mlp_dim": 256,
    "model.dropout": 0.0,
    "sample.num_tokens": 0,
}


def get_sweep():
  return Sweep(
      config="configs/wikitext2_word.py",
      overrides=BASE,
      variants={"no_cda": {}, "cda": {"data.cda.mode": "add"}},
      seeds=3,
      metric="eval_ppl",
      columns=("eval_loss",),
      description="Counterfactual data augmentation (gender swaps) vs none: perplexity here, "
                  "CrowS-Pairs from report.py.",
  )
