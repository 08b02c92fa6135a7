"""Penn Treebank word-level LM (Mikolov's split): the classic recipes, reproduced.

  python -m jaxlm.main --config=configs/ptb.py:kn5 --workdir=/tmp/ptb_kn5 \
      --config.data.path=../shared/data/ptb/ptb.train.txt \
      --config.data.eval_path=../shared/data/ptb/ptb.valid.txt

Variants (append `,smoke` for a seconds-long run on a small slice):
* `kn5`: interpolated modified Kneser-Ney 5-gram (Mikolov et al. 2011: test ~141.2, valid ~148).
  Each line is a sentence scored from a BOS context; every word and each line's `<eos>` is
  predicted: 73,760 tokens on valid.
"""

from __future__ import annotations

import os

from jaxlm.config import base_config
from jaxlm.recipes import apply_variants

PTB_ROOT = os.path.join(os.environ.get("JAXLM_SHARED_DATA", "../shared/data"), "ptb")


def _data(c) -> None:
  d = c.data
  d.name = ""
  d.path = os.path.join(PTB_ROOT, "ptb.train.txt")
  d.eval_path = os.path.join(PTB_ROOT, "ptb.valid.txt")
  d.tokenizer = "word"  # Vocabulary from the training split only (10k incl. <unk>).
  d.word_eos_per_line = True
  d.doc_unit = "file"  # One token stream per split.
  d.shuffle = False


def kn5(c) -> None:
  c.model.family = "ngram"
  c.ngram.order = 5
  c.data.doc_unit = "line"  # Sentences, each from a BOS context (as SRILM/KenLM score them).


VARIANTS = {"kn5": kn5}
DEFAULT = "kn5"


def get_config(arg: str | None = None):
  c = base_config()
  _data(c)
  names = [a for a in (arg or "").split(",") if a]
  models = [n for n in names if n in VARIANTS] or [DEFAULT]
  if len(models) != 1:
    raise ValueError(f"configs/ptb.py needs exactly one of {sorted(VARIANTS)} (got {arg!r}); "
                     "add ',smoke' for a short run.")
  VARIANTS[models[0]](c)
  return apply_variants(c, ",".join(n for n in names if n not in VARIANTS))
