"""`jaxlm.prepare`: cleaning wired into the prepared dataset, the report, the CLI."""

import json
import os
import subprocess
import sys

from conftest import REPO, cpu_env, synthetic_text, tiny_config

from jaxlm import prepare
from jaxlm.data import pipeline, sources
from jaxlm.data import tokenizers as tok_lib

LONG = " ".join(f"word{i % 37} token{i % 11}" for i in range(60))
PLANTED = [
    LONG,
    LONG.replace("word5 token5", "word5 tokenX", 1),  # Near duplicate of LONG.
    "please contact jane.doe@example.com about the model and the corpus of words today",
    "ok",  # Shorter than min_chars.
]


def _corpus(tmp_path) -> str:
  paras = synthetic_text(120, seed=5).strip().split("\n\n")
  paras = paras[:60] + PLANTED + [paras[3], paras[10]] + paras[60:]  # Two exact duplicates.
  path = tmp_path / "corpus.txt"
  path.write_text("\n\n".join(paras) + "\n")
  return str(path)


def _clean_config(path, data_dir):
  c = tiny_config(path, data_dir)
  cl = c.data.clean
  cl.enabled, cl.near_dedup, cl.near_dedup_threshold, cl.pii, cl.min_chars = \
      True, True, 0.7, "scrub", 10
  return c


def test_prepare_cleans_reports_and_training_reads_the_cleaned_data(tmp_path, data_dir):
  c = _clean_config(_corpus(tmp_path), data_dir)
  wd = str(tmp_path / "run")
  report = prepare.prepare(c, wd)
  with open(os.path.join(wd, prepare.REPORT_JSON)) as f:
    assert json.load(f)["splits"] == report["splits"]
  text = open(os.path.join(wd, prepare.REPORT_TXT)).read()
  assert "near_dedup" in text and "tokens" in text
  steps = report["clean"]["steps"]
  assert steps["exact_dedup"]["removed"] == 2 and steps["near_dedup"]["removed"] == 1
  assert steps["quality"]["reasons"]["min_chars"] == 1
  assert report["clean"]["pii_counts"]["email"] == 1 and steps["privacy"]["changed"] == 1
  assert "jane.doe" not in json.dumps(report)  # Examples are scrubbed too.
  splits = report["splits"].values()
  assert sum(s["docs_in"] - s["docs_out"] for s in splits) == 4
  assert all(s["tokens_out"] <= s["tokens_in"] for s in splits)
  assert sum(s["tokens_in"] - s["tokens_out"] for s in splits) > len(LONG)
  # Training reads the same cleaned dataset: no PII, no duplicates, no short document.
  texts = [t for split in ("train", "validation") for t in sources.iter_texts(c.data, split)]
  assert len(texts) == len(set(texts)) == sum(s["docs_out"] for s in splits)
  assert any("<EMAIL>" in t for t in texts) and not any("@example.com" in t for t in texts)
  assert "ok" not in texts
  docs = pipeline.documents(c.data, "train")
  assert len(docs) == report["splits"]["train"]["docs_out"]
  # Cleaning off: the documents as read, a different prepared dataset.
  c.data.clean.enabled = False
  raw = [t for split in ("train", "validation") for t in sources.iter_texts(c.data, split)]
  assert "ok" in raw and len(raw) == sum(s["docs_in"] for s in splits)


def _prepare_cli(*args):
  env = cpu_env(1)
  return subprocess.run([sys.executable, "-m", "jaxlm.prepare", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_prepare_cli_with_spm_tokenizer_and_bad_input(tmp_path, text_file, data_dir):
  wd = tmp_path / "run"
  common = ["--config=configs/default.py:smoke", f"--workdir={wd}",
            f"--config.data.data_dir={data_dir}", "--config.data.doc_unit=paragraph"]
  p = _prepare_cli(*common, f"--config.data.path={text_file}", "--config.data.tokenizer=spm",
                   "--config.data.vocab_size=300", "--config.data.spm_model_type=bpe",
                   "--config.data.spm_max_sentences=500", "--config.data.clean.enabled=True",
                   "--config.data.clean.min_chars=40")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "documents" in p.stdout and "quality" in p.stdout
  tok = tok_lib.load_tokenizer(str(wd))
  assert tok.kind == "spm" and tok.vocab_size == 300 and (wd / tok_lib.SPM_MODEL_FILE).exists()
  report = json.loads((wd / prepare.REPORT_JSON).read_text())
  assert report["tokenizer"] == tok.identity() and report["cleaning_enabled"]
  assert report["clean"]["steps"]["quality"]["removed"] > 0
  # Same workdir, another tokenizer kind: refused in one line, no traceback.
  p = _prepare_cli(*common, f"--config.data.path={text_file}", "--config.data.tokenizer=word")
  assert p.returncode == 1 and "holds a 'spm' tokenizer" in p.stderr
  assert "Traceback" not in p.stderr
  p = _prepare_cli(*common, f"--config.data.path={tmp_path}/missing.txt")
  assert p.returncode == 1 and "config.data.path" in p.stderr and "Traceback" not in p.stderr


def test_word_tokenizer_fields_from_config_and_reuse(tmp_path, data_dir):
  path = tmp_path / "w.txt"
  path.write_text("".join(f"The Cat sat {i % 7}\non the Mat\n\n" for i in range(80)))
  c = tiny_config(str(path), data_dir, **{"data.tokenizer": "word", "data.word_lowercase": True,
                                          "data.word_max_size": 6,
                                          "data.word_eos_per_line": False,
                                          "data.val_split": "tail"})
  wd = str(tmp_path / "run")
  prepare.prepare(c, wd)
  tok = tok_lib.load_tokenizer(wd)
  assert tok.kind == "word" and tok.lowercase and not tok.eos_per_line and len(tok.words) == 6
  assert (tmp_path / "run" / tok_lib.WORD_VOCAB_FILE).exists()
  assert tok.encode("THE CAT\nsat").tolist() == tok.encode("the cat sat").tolist()
  c.data.word_max_size = 3  # A saved tokenizer wins: reused, not retrained.
  assert prepare.prepare(c, wd)["tokenizer"] == tok.identity()
  c.data.tokenizer_path, c.data.tokenizer = wd, "word"  # Loaded from a path in a new run.
  assert prepare.prepare(c, str(tmp_path / "run2"))["tokenizer"] == tok.identity()
