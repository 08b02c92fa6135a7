"""Data edge cases real files bring: CRLF line endings, huge CSV fields, unclosed quotes,
deeply nested JSON lines, UTF-16/32 files."""

import pytest

from jaxlm.data import readers
from jaxlm.data.readers import DataError, ReadOptions

PARAS = [f"paragraph {i} line one\nparagraph {i} line two" for i in range(300)]


def _write(tmp_path, name: str, data: bytes) -> str:
  path = tmp_path / name
  path.write_bytes(data)
  return str(path)


def _texts(paths, **kw) -> list[str]:
  return [e["text"] for e in readers.read_examples(paths, ReadOptions(**kw))]


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_files_read_like_lf(tmp_path, newline):
  lf = "\n\n".join(PARAS) + "\n"
  p_lf = _write(tmp_path, "lf.txt", lf.encode())
  p_cr = _write(tmp_path, "cr.txt", lf.replace("\n", newline).encode())
  for unit in ("paragraph", "line", "file"):
    assert _texts([p_cr], doc_unit=unit) == _texts([p_lf], doc_unit=unit)
  paras = _texts([p_cr], doc_unit="paragraph")
  assert len(paras) == 300 and paras[0] == PARAS[0]  # Old code: 1 paragraph, '\r' kept.
  assert not any("\r" in t for t in _texts([p_cr], doc_unit="line"))


def test_crlf_tables_and_jsonl_lose_the_carriage_return(tmp_path):
  tsv = _write(tmp_path, "a.tsv", b"sentence\tlabel\r\nfine film\t1\r\nbad film\t0\r\n")
  opts = ReadOptions(format="tsv", text_key="sentence", label_key="label", num_classes=2)
  ex = readers.read_examples([tsv], opts)
  assert ex == [{"text": "fine film", "label": 1}, {"text": "bad film", "label": 0}]
  js = _write(tmp_path, "a.jsonl", b'{"text": "a\\r\\nb"}\r\n{"text": "c"}\r\n')
  assert _texts([js], format="jsonl") == ["a\r\nb", "c"]  # Escapes inside JSON are data.


def test_csv_field_over_128_kib_is_read(tmp_path):
  big = "word " * 60_000  # 300 kB: over csv's default field limit (131,072).
  path = _write(tmp_path, "big.csv", f'text\n"{big}"\nshort\n'.encode())
  assert _texts([path], format="csv") == [big, "short"]


def test_csv_field_over_the_limit_names_file_and_line(tmp_path, monkeypatch):
  monkeypatch.setattr(readers, "MAX_FIELD_CHARS", 1000)
  path = _write(tmp_path, "big.csv", ("text\nok\nok\n" + "x" * 5000 + "\nok\n").encode())
  with pytest.raises(DataError, match=rf"{path}:4: malformed CSV row .*over 1,000 characters"):
    readers.read_examples([path], ReadOptions(format="csv"))
  import csv
  assert csv.field_size_limit() == 131072  # The process-wide limit is restored.


def test_unclosed_csv_quote_is_reported_not_merged(tmp_path):
  rows = 'text,label\nfine,1\n"never closed,0\nbad,0\ngood,1\n'
  path = _write(tmp_path, "q.csv", rows.encode())
  opts = ReadOptions(format="csv", label_key="label", num_classes=2)
  with pytest.raises(DataError, match=rf"{path}:3: malformed CSV row starting here "
                                      r"\(unexpected end of data.*never closed"):
    readers.read_examples([path], opts)
  # A quote closed later, with text after it: also a malformed row, not merged rows.
  path = _write(tmp_path, "q2.csv", b'text,label\n"a,1\nb,0\n"c",1\n')
  with pytest.raises(DataError, match=rf"{path}:2: malformed CSV row"):
    readers.read_examples([path], opts)
  # Negative control: quoted commas, doubled quotes and a quoted newline are fine.
  path = _write(tmp_path, "ok.csv", b'text,label\n"a, b",1\n"say ""hi""",0\n"two\nlines",1\n')
  assert [e["text"] for e in readers.read_examples([path], opts)] == \
      ["a, b", 'say "hi"', "two\nlines"]


def test_deeply_nested_json_line_names_file_and_line(tmp_path):
  deep = "[" * 100_000 + "]" * 100_000
  path = _write(tmp_path, "d.jsonl", f'{{"text": "ok"}}\n{{"text": {deep}}}\n'.encode())
  with pytest.raises(DataError, match=rf"{path}:2: JSON nested too deeply"):
    readers.read_examples([path], ReadOptions(format="jsonl"))


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_bom_are_decoded(tmp_path, codec):
  text = "héllo wörld\r\n\r\nzweiter Absatz ✓\r\n"
  data = text.encode(codec)
  if codec == "utf-16-be":
    data = b"\xfe\xff" + data
  path = _write(tmp_path, f"{codec}.txt", data)
  stats = {}
  ex = readers.read_examples([path], ReadOptions(doc_unit="paragraph"), stats=stats)
  assert [e["text"] for e in ex] == ["héllo wörld", "zweiter Absatz ✓"]
  assert "invalid_utf8_bytes" not in stats and path in stats["decoded_files"]


def test_utf16_without_bom_is_refused(tmp_path):
  path = _write(tmp_path, "nobom.txt", "plain text here\n".encode("utf-16-le"))
  with pytest.raises(DataError, match=rf"{path}: .* NUL: UTF-16 or UTF-32 without a byte-order "
                                      r"mark.*Fix: convert it to UTF-8"):
    readers.read_examples([path], ReadOptions())
  bad = _write(tmp_path, "bad16.txt", b"\xff\xfe" + "ok".encode("utf-16-le") + b"\x00\xd8")
  with pytest.raises(DataError, match=r"UTF-16-LE byte-order mark but byte 6 is not valid"):
    readers.read_examples([bad], ReadOptions(encoding_errors="strict"))
