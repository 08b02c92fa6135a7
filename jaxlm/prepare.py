"""`python -m jaxlm.prepare --config=configs/X.py --workdir=DIR`: prepare the data, report.

Prepares the configured dataset exactly as training will read it (the same
tfds builder, so cleaning per `config.data.clean` included), builds the
tokenizer into the workdir (training in that workdir reuses it), and prints
and saves a report: documents and tokens in and out per split, what each
cleaning step removed or changed with a few examples, and bad input counted
(invalid UTF-8 bytes, empty pairs, documents longer than a padded row).

Training does not need this command: the first run prepares the same dataset
(cleaned when `config.data.clean.enabled`). It is for inspecting what cleaning
does before spending compute, and for preparing once on a shared data dir.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from jaxlm import workdir as wd_lib
from jaxlm.data import augment, cleaning, sources
from jaxlm.data import tokenizers as tok_lib

REPORT_JSON = "prepare_report.json"
REPORT_TXT = "prepare_report.txt"


def _split_stats(d, split: str, tokenizer: tok_lib.Tokenizer) -> dict:
  """Documents, characters and tokens (EOS included, as training counts them) of a split."""
  docs = chars = tokens = longest = over = 0
  row = d.seq_len + 1
  for text in sources.iter_texts(d, split):
    n = len(tokenizer.encode(text)) + 1
    docs, chars, tokens, longest = docs + 1, chars + len(text), tokens + n, max(longest, n)
    over += n + 1 > row  # pad mode adds BOS: this document would be cut.
  return {"docs": docs, "chars": chars, "tokens": tokens, "longest_doc_tokens": longest,
          "docs_longer_than_pad_row": over}


def prepare(config, workdir: str) -> dict:
  """Prepares `config.data` and the tokenizer; returns (and saves) the report."""
  os.makedirs(workdir, exist_ok=True)
  d = config.data
  builder = sources.get_builder(d)
  tokenizer = tok_lib.get_tokenizer(d.tokenizer, workdir,
                                    lambda: sources.iter_texts(d, d.train_split), d)
  raw = None
  if d.clean.get("enabled", False):  # The same source with cleaning off, for "in" figures.
    raw = copy.deepcopy(d)
    with raw.unlocked():
      raw.clean.enabled = False
  meta = dict(builder.info.metadata or {})
  report: dict = {
      "dataset": builder.info.full_name,
      "data_dir": builder.data_dir,
      "tokenizer": tokenizer.identity(),
      "cleaning_enabled": raw is not None,
      "read_stats": meta.get("read_stats", {}),
      "splits": {},
  }
  for split in dict.fromkeys([d.train_split, d.eval_split]):
    out = _split_stats(d, split, tokenizer)
    before = _split_stats(raw, split, tokenizer) if raw is not None else out
    report["splits"][split] = {
        "docs_in": before["docs"], "docs_out": out["docs"],
        "chars_in": before["chars"], "chars_out": out["chars"],
        "tokens_in": before["tokens"], "tokens_out": out["tokens"],
        "longest_doc_tokens": out["longest_doc_tokens"],
        "docs_longer_than_pad_row": out["docs_longer_than_pad_row"],
    }
  report["clean"] = meta.get("clean_report")
  report["augment"] = meta.get("augment_report")  # bias: CDA and canaries.
  augment.record(d, workdir)
  text = format_report(report)
  wd_lib.write_text(wd_lib.path(workdir) / REPORT_JSON,
                    json.dumps(report, indent=1, ensure_ascii=False, default=_jsonable))
  wd_lib.write_text(wd_lib.path(workdir) / REPORT_TXT, text + "\n")
  return report


def _jsonable(x):
  if isinstance(x, np.generic):
    return x.item()
  return list(x) if isinstance(x, tuple) else str(x)


def format_report(report: dict) -> str:
  lines = [f"dataset {report['dataset']} in {report['data_dir']}",
           f"tokenizer {report['tokenizer']}"]
  for split, s in report["splits"].items():
    lines.append(f"{split:>12}: documents {s['docs_in']:,} -> {s['docs_out']:,}, tokens "
                 f"{s['tokens_in']:,} -> {s['tokens_out']:,}, characters {s['chars_in']:,} -> "
                 f"{s['chars_out']:,}; longest document {s['longest_doc_tokens']:,} tokens")
  bad = report["read_stats"]
  if bad.get("invalid_utf8_bytes"):
    lines.append(f"invalid UTF-8 bytes replaced: {bad['invalid_utf8_bytes']:,} in "
                 f"{', '.join(bad['invalid_utf8_files'])}")
  if bad.get("skipped_empty_pairs"):
    lines.append(f"parallel pairs skipped (a side empty): {bad['skipped_empty_pairs']:,}")
  if report["clean"]:
    lines.append(cleaning.format_report(report["clean"]))
  else:
    lines.append("cleaning: off (set --config.data.clean.enabled=True)")
  if report.get("augment"):
    lines.append(augment.format_report(report["augment"]))
  return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv) -> None:
  del argv
  from jaxlm.checkpoint import CheckpointError
  from jaxlm.config import ConfigError

  try:
    report = prepare(FLAGS.config, FLAGS.workdir)
  except (sources.DataError, ConfigError, CheckpointError, ValueError) as e:
    logging.error("%s", e)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(format_report(report))
  print(f"Report saved to {os.path.join(FLAGS.workdir, REPORT_JSON)} (and {REPORT_TXT}).")


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory: the tokenizer and the report go here.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
