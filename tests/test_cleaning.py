"""Normalisation, quality filters and the clean_documents pipeline and report."""

import json

import pytest

from jaxlm.data import cleaning


def test_normalize_unicode_forms():
  assert cleaning.normalize("ﬁne", "NFKC") == "fine"  # Ligature folded.
  assert cleaning.normalize("ﬁne", "NFC") == "ﬁne"
  assert cleaning.normalize("ＡＢＣ１", "NFKC") == "ABC1"
  assert cleaning.normalize("e\u0301", "NFC") == "\u00e9"
  assert cleaning.normalize("e\u0301", "none") == "e\u0301"
  with pytest.raises(ValueError, match="form"):
    cleaning.normalize("x", "NFD")


def test_normalize_control_characters():
  assert cleaning.normalize("a\x00b\x07c\x1bd\x7fe") == "abcde"
  assert cleaning.normalize("a\r\nb\rc") == "a\nb\nc"
  assert cleaning.normalize("a\tb", collapse_whitespace=False) == "a\tb"  # Tab kept.
  assert cleaning.normalize("a\x00b", strip_control=False) == "a\x00b"


def test_normalize_whitespace():
  assert cleaning.normalize("  a  \t b\u00a0\u3000c  ") == "a b c"
  assert cleaning.normalize("line one  \n  line two") == "line one\nline two"
  assert cleaning.normalize("para one\n\npara two") == "para one\n\npara two"
  assert cleaning.normalize("a\n\n\n\n\nb") == "a\n\nb"
  assert cleaning.normalize("a\n \n\t\n b") == "a\n\nb"
  assert cleaning.normalize("\n\n a \n\n") == "a"
  raw = " x \n\n\n y\x00 "
  assert cleaning.normalize(raw, "none", strip_control=False, collapse_whitespace=False) == raw


def test_alpha_ratio_filter():
  assert cleaning.alpha_ratio("abc 123") == pytest.approx(0.5)
  assert cleaning.alpha_ratio("   ") == 0.0
  cfg = {"min_alpha_ratio": 0.6}
  assert cleaning.quality_check("Plain English words here.", cfg) is None
  assert cleaning.quality_check("| 12 | 34.5 | 99 | -- |", cfg) == "min_alpha_ratio"


def test_length_filters():
  cfg = {"min_chars": 5, "max_chars": 10}
  assert cleaning.quality_check("hello", cfg) is None
  assert cleaning.quality_check("hi", cfg) == "min_chars"
  assert cleaning.quality_check("hello world!", cfg) == "max_chars"
  assert cleaning.quality_check("x" * 10_000, {"max_chars": 0}) is None  # 0 = no limit.


def test_repeated_line_filter():
  spam = "Home\nAbout\nHome\nAbout\nHome\nContact"
  assert cleaning.repeated_line_ratio(spam) == pytest.approx(3 / 6)
  assert cleaning.repeated_line_ratio("a\n\n\nb") == 0.0  # Blank lines do not count.
  cfg = {"max_repeated_line_ratio": 0.3}
  assert cleaning.quality_check(spam, cfg) == "max_repeated_line_ratio"
  assert cleaning.quality_check("one\ntwo\nthree\none", cfg) is None  # 1/4 <= 0.3.


def test_repeated_ngram_filter():
  loop = "buy now and save big " * 6
  assert cleaning.repeated_ngram_ratio(loop, 5) == pytest.approx(21 / 26)  # 26 5-grams, 5 distinct.
  assert cleaning.repeated_ngram_ratio("too short", 5) == 0.0
  prose = "the quick brown fox jumps over the lazy dog while the cat sleeps"
  assert cleaning.repeated_ngram_ratio(prose, 5) == 0.0
  cfg = {"max_repeated_ngram_ratio": 0.2, "repeated_ngram_n": 5}
  assert cleaning.quality_check(loop, cfg) == "max_repeated_ngram_ratio"
  assert cleaning.quality_check(prose, cfg) is None
  assert cleaning.repeated_ngram_ratio("a b a b a", 2) == pytest.approx(2 / 4)


def test_quality_check_order_and_defaults():
  assert cleaning.quality_check("") is None  # Defaults: every filter off.
  assert cleaning.quality_check("1 1 1\n1 1 1", cleaning.clean_config()) is None
  cfg = cleaning.clean_config()
  cfg.min_chars, cfg.min_alpha_ratio = 10, 0.9
  assert cleaning.quality_check("123", cfg) == "min_chars"  # First failing filter wins.
  assert cleaning.quality_check("1234567890", cfg) == "min_alpha_ratio"


def test_clean_config_fields():
  cfg = cleaning.clean_config()
  assert cfg.normalize == "NFC" and cfg.strip_control and cfg.exact_dedup
  assert not cfg.near_dedup and cfg.pii == "none"
  assert tuple(cfg.pii_kinds) == ("email", "phone", "ip", "credit_card")
  assert (cfg.near_dedup_threshold, cfg.minhash_num_perm, cfg.shingle_size) == (0.8, 128, 5)
  assert (cfg.min_chars, cfg.max_chars, cfg.min_alpha_ratio) == (0, 0, 0.0)
  assert (cfg.max_repeated_line_ratio, cfg.max_repeated_ngram_ratio) == (1.0, 1.0)
  assert cfg.repeated_ngram_n == 5


def test_defaults_leave_clean_corpus_unchanged():
  docs = [
      "First document.\n\nSecond paragraph with 123 numbers, a@b.com and 10.0.0.1.",
      "x",
      "spam\nspam\nspam",
      "First document.\n\nSecond paragraph with 123 numbers, a@b.com and 10.0.0.2.",
  ]
  kept, report = cleaning.clean_documents(docs)
  assert kept == docs
  assert report["docs_in"] == report["docs_out"] == 4
  assert report["chars_in"] == report["chars_out"]
  assert [s["enabled"] for s in report["steps"].values()] == [True, False, False, True, False]


def _mixed_corpus():
  base = " ".join(f"word{i}" for i in range(120))
  return [
      "Hello  world,\r\nthis is the first document.",  # 0: normalised.
      "Write to jane.doe@example.com or call +1 415 555 2671.",  # 1: 1 email + 1 phone.
      "1 2 3 4 5 6 7 8 9 10 11 12",  # 2: fails min_alpha_ratio.
      "ok",  # 3: fails min_chars.
      "Hello world,\nthis is the first document.",  # 4: exact duplicate of 0 after normalize.
      base,  # 5
      base.replace("word7 ", "changed ", 1),  # 6: near duplicate of 5.
      "Server 10.0.0.1 is down; card 4111 1111 1111 1111 was charged.",  # 7: ip + card.
      "menu\nmenu\nmenu\nmenu\nreal text",  # 8: fails max_repeated_line_ratio.
  ]


def _mixed_config(pii: str):
  cfg = cleaning.clean_config()
  cfg.normalize = "NFKC"
  cfg.pii = pii
  cfg.min_chars = 5
  cfg.min_alpha_ratio = 0.5
  cfg.max_repeated_line_ratio = 0.5
  cfg.near_dedup = True
  return cfg


def test_clean_documents_report_scrub():
  docs = _mixed_corpus()
  kept, report = cleaning.clean_documents(iter(docs), _mixed_config("scrub"))
  assert kept == [
      "Hello world,\nthis is the first document.",
      "Write to <EMAIL> or call <PHONE>.",
      docs[5],
      "Server <IP> is down; card <CREDIT_CARD> was charged.",
  ]
  json.dumps(report)  # Serializable.
  assert report["docs_in"] == 9 and report["docs_out"] == 4
  assert report["chars_in"] == sum(map(len, docs))
  assert report["chars_out"] == sum(map(len, kept))
  assert report["pii_counts"] == {"email": 1, "phone": 1, "ip": 1, "credit_card": 1}
  steps = report["steps"]
  assert steps["normalize"]["changed"] == 1
  assert steps["normalize"]["examples"][0]["index"] == 0
  assert (steps["privacy"]["changed"], steps["privacy"]["removed"]) == (2, 0)
  assert steps["quality"]["removed"] == 3
  assert steps["quality"]["reasons"] == {
      "min_chars": 1,
      "max_chars": 0,
      "min_alpha_ratio": 1,
      "max_repeated_line_ratio": 1,
      "max_repeated_ngram_ratio": 0,
  }
  assert [e["index"] for e in steps["quality"]["examples"]] == [2, 3, 8]
  assert steps["exact_dedup"]["removed"] == 1
  assert steps["exact_dedup"]["examples"][0]["duplicate_of"] == 0
  assert steps["near_dedup"]["removed"] == 1
  assert steps["near_dedup"]["examples"][0] == {
      "index": 6,
      "duplicate_of": 5,
      "text": docs[6][:200] + "...",
      "kept": docs[5][:200] + "...",
  }
  text = cleaning.format_report(report)
  assert "9 -> 4 documents" in text and "min_chars: 1" in text and "credit_card: 1" in text


def test_clean_documents_drop_mode_hides_pii_in_report():
  kept, report = cleaning.clean_documents(_mixed_corpus(), _mixed_config("drop"))
  assert len(kept) == 2
  assert (report["steps"]["privacy"]["removed"], report["steps"]["privacy"]["changed"]) == (2, 0)
  assert report["pii_counts"] == {"email": 1, "phone": 1, "ip": 1, "credit_card": 1}
  dumped = json.dumps(report)
  assert "jane.doe@example.com" not in dumped and "4111 1111" not in dumped
  assert "<EMAIL>" in dumped
  assert "privacy" in cleaning.format_report(report, examples=False)


def test_examples_are_capped_and_truncated():
  docs = [f"{i} " * 300 for i in range(10)]  # All fail min_alpha_ratio.
  _, report = cleaning.clean_documents(docs, {"min_alpha_ratio": 0.5})
  examples = report["steps"]["quality"]["examples"]
  assert report["steps"]["quality"]["removed"] == 10 and len(examples) == 3
  assert all(len(e["text"]) <= 203 for e in examples)


def test_bad_config_is_refused():
  with pytest.raises(ValueError, match="pii"):
    cleaning.clean_documents(["x"], {"pii": "mask"})
  with pytest.raises(ValueError, match="pii_kinds"):
    cleaning.clean_documents(["x"], {"pii": "scrub", "pii_kinds": ("ssn",)})
  with pytest.raises(ValueError, match="normalize"):
    cleaning.clean_documents(["x"], {"normalize": "NFD"})
