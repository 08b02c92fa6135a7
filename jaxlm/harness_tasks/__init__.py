"""Offline lm-eval tasks built from local files: PTB last-word and SST-2 multiple choice.

  python -m jaxlm.harness_tasks --out=/tmp/tasks [--data=../shared/data] [--limit=500]
  python -m jaxlm.harness --model jaxlm --model_args workdir=W \\
      --tasks jaxlm_ptb_lastword,jaxlm_sst2_mc --include_path /tmp/tasks

The task YAMLs shipped here (`dataset_path: json`) name their data file relative to
themselves; `write_tasks` writes the jsonl files from the shared datasets and copies
each YAML with `data_files` made absolute, so the harness reads local files only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = {"jaxlm_ptb_lastword": ("ptb_lastword.jsonl", "test"),
         "jaxlm_sst2_mc": ("sst2_dev.jsonl", "validation")}


def shared_data_dir() -> str:
  return os.environ.get("JAXLM_SHARED_DATA", os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                                          "..", "shared", "data"))


def ptb_lastword_docs(ptb_valid: str, limit: int = 0) -> list[dict]:
  """Sentences of >= 4 words whose last word is a real word (not <unk> or N)."""
  docs = []
  with open(ptb_valid, encoding="utf-8") as f:
    for line in f:
      words = line.split()
      if len(words) < 4 or words[-1] in ("<unk>", "N"):
        continue
      docs.append({"context": " ".join(words[:-1]), "target": words[-1]})
      if limit and len(docs) >= limit:
        break
  return docs


def sst2_docs(dev_tsv: str, limit: int = 0) -> list[dict]:
  docs = []
  with open(dev_tsv, encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
      docs.append({"sentence": row["sentence"].strip(), "label": int(row["label"])})
      if limit and len(docs) >= limit:
        break
  return docs


def write_tasks(out_dir: str, data_dir: str | None = None, limit: int = 0) -> list[str]:
  """Writes both tasks' jsonl data and YAMLs into `out_dir`; returns the task names."""
  import yaml

  data_dir = data_dir or shared_data_dir()
  sources = {"jaxlm_ptb_lastword": (os.path.join(data_dir, "ptb", "ptb.valid.txt"),
                                    ptb_lastword_docs),
             "jaxlm_sst2_mc": (os.path.join(data_dir, "sst2", "dev.tsv"), sst2_docs)}
  os.makedirs(out_dir, exist_ok=True)
  for task, (src, build) in sources.items():
    if not os.path.isfile(src):
      raise FileNotFoundError(f"{src} is missing. Fix: pass --data=DIR holding ptb/ and sst2/ "
                              "(the shared datasets) or set JAXLM_SHARED_DATA.")
    data_file, split = TASKS[task]
    path = os.path.abspath(os.path.join(out_dir, data_file))
    with open(path, "w", encoding="utf-8") as f:
      for doc in build(src, limit):
        f.write(json.dumps(doc) + "\n")
    with open(os.path.join(HERE, f"{task}.yaml"), encoding="utf-8") as f:
      text = f.read()
    spec = yaml.safe_load(text)
    if spec["dataset_kwargs"]["data_files"] != {split: data_file}:
      raise ValueError(f"{task}.yaml: data_files must be {{{split}: {data_file}}}.")
    text = text.replace(f"{split}: {data_file}", f"{split}: {json.dumps(path)}")
    with open(os.path.join(out_dir, f"{task}.yaml"), "w", encoding="utf-8") as f:
      f.write(text)
  return list(sources)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="Folder for the task YAMLs and data.")
  p.add_argument("--data", default=None, help="Shared datasets folder (default "
                 "$JAXLM_SHARED_DATA or ../shared/data).")
  p.add_argument("--limit", type=int, default=0, help="Documents per task; 0 = all.")
  a = p.parse_args(argv)
  try:
    names = write_tasks(a.out, a.data, a.limit)
  except (OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {', '.join(names)} to {a.out} (use --include_path {a.out})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
