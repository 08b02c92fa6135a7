"""Data steps for bias and privacy: CDA swaps on a fixed text, canaries inserted, both visible
in the prepare report and part of the prepared dataset's identity."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, cpu_env, synthetic_text, tiny_config

from jaxlm import config as config_lib
from jaxlm import prepare
from jaxlm.data import augment, sources


def test_cda_swaps_a_fixed_text_preserving_case():
  text = ("He gave her book to his Mother. She told her that the King and the queen were "
          "MEN. The boys' father thanked HIM.")
  out, n = augment.swap_gender(text)
  assert out == ("She gave his book to her Father. He told him that the Queen and the king "
                 "were WOMEN. The girls' mother thanked HER.")
  assert n == 12
  assert augment.swap_gender("Nothing to see; chairs and hosts count.") == (
      "Nothing to see; chairs and hosts count.", 0)
  # Names only when asked.
  assert augment.swap_gender("John met Mary.")[1] == 0
  assert augment.swap_gender("John met Mary.", augment.swap_table(names=True)) == (
      "Anna met James.", 2)


def test_cda_add_and_substitute_report():
  docs = [{"text": "he runs"}, {"text": "a cat"}, {"text": "his wife and her son"}]
  out, rep = augment.cda(docs, "add")
  assert [d["text"] for d in out] == ["he runs", "she runs", "a cat", "his wife and her son",
                                      "her husband and his daughter"]
  assert rep == {"mode": "add", "names": False, "docs_in": 3, "docs_out": 5, "docs_changed": 2,
                 "words_swapped": 5}
  out, rep = augment.cda(docs, "substitute")
  assert [d["text"] for d in out] == ["she runs", "a cat", "her husband and his daughter"]


def test_canaries_are_deterministic_and_inserted_count_times():
  c = augment.canaries_config()
  c.counts, c.digits = (1, 4, 16), 9
  can = augment.make_canaries(c)
  assert [k["count"] for k in can] == [1, 4, 16] and can == augment.make_canaries(c)
  assert all(len(k["secret"].split()) == 9 and k["text"].startswith("the random number is ")
             for k in can)
  docs = [{"text": f"doc {i}"} for i in range(50)]
  out, rep = augment.insert_canaries(docs, c)
  assert len(out) == 71 and rep["docs_inserted"] == 21
  assert [d["text"] for d in out if d["text"].startswith("doc")] == [d["text"] for d in docs]
  for k in can:
    assert sum(d["text"] == k["text"] for d in out) == k["count"]


def test_bad_options_fail_in_validate():
  c = config_lib.base_config()
  c.data.cda.mode = "swap"
  with pytest.raises(config_lib.ConfigError, match="cda.mode.*Fix"):
    config_lib.validate(c, 1)
  c = config_lib.base_config()
  c.data.canaries.counts = (1, 0)
  with pytest.raises(config_lib.ConfigError, match="count below 1.*Fix"):
    config_lib.validate(c, 1)


def _corpus(tmp_path):
  paras = synthetic_text(60, seed=3).strip().split("\n\n")
  paras[:3] = ["he said his father was a king", "she met her mother", "He saw HER."]
  path = tmp_path / "corpus.txt"
  path.write_text("\n\n".join(paras) + "\n")
  return str(path)


def test_prepare_reports_cda_and_canaries_and_the_dataset_changes(tmp_path, data_dir):
  path = _corpus(tmp_path)
  c = tiny_config(path, data_dir)
  c.data.val_split = "tail"  # The planted documents are all in train.
  plain = list(sources.iter_texts(c.data, "train"))
  c.data.cda.mode = "add"
  c.data.canaries.counts = (1, 3)
  c.data.canaries.digits = 4
  wd = str(tmp_path / "run")
  report = prepare.prepare(c, wd)
  rep = report["augment"]
  assert rep["cda"]["docs_changed"] == 3 and rep["cda"]["words_swapped"] == 4 + 3 + 2
  assert rep["canaries"]["docs_inserted"] == 4
  texts = list(sources.iter_texts(c.data, "train"))
  assert len(texts) == len(plain) + 3 + 4  # A different prepared dataset, re-prepared.
  assert "she said her mother was a queen" in texts and "She saw HIM." in texts
  secrets = json.load(open(os.path.join(wd, augment.CANARIES_FILE)))["canaries"]
  assert sum(t == secrets[1]["text"] for t in texts) == 3
  assert "cda (add)" in open(os.path.join(wd, prepare.REPORT_TXT)).read()
  # Validation is untouched.
  assert not any(t.startswith("the random number") for t in sources.iter_texts(c.data,
                                                                                "validation"))


def test_prepare_cli_reports_cda(tmp_path, text_file, data_dir):
  env = cpu_env(1)
  p = subprocess.run([sys.executable, "-m", "jaxlm.prepare", "--config=configs/default.py:smoke",
                      f"--workdir={tmp_path}/w", f"--config.data.data_dir={data_dir}",
                      f"--config.data.path={_corpus(tmp_path)}",
                      "--config.data.doc_unit=paragraph", "--config.data.cda.mode=substitute"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert "cda (substitute): documents changed" in p.stdout
