"""PII detection: planted values are scrubbed and counted, near-misses are left alone."""

import pytest

from jaxlm.data import privacy

POSITIVES = [
    ("email", "john.doe@example.com"),
    ("email", "j_smith+news@mail.example.co.uk"),
    ("phone", "+1 415 555 2671"),
    ("phone", "+44 (0)20 7946 0958"),
    ("phone", "+49 30 1234567"),
    ("phone", "+4915112345678"),
    ("phone", "+33 1 23 45 67 89"),
    ("phone", "(555) 123-4567"),
    ("phone", "555-123-4567"),
    ("phone", "555.123.4567"),
    ("phone", "1-800-555-1234"),
    ("phone", "030 1234567"),
    ("phone", "020 7946 0958"),
    ("phone", "06-12345678"),
    ("phone", "01 23 45 67 89"),
    ("ip", "192.168.1.1"),
    ("ip", "10.0.0.255"),
    ("ip", "255.255.255.0"),
    ("ip", "2001:db8::1"),
    ("ip", "fe80::1ff:fe23:4567:890a"),
    ("ip", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
    ("credit_card", "4111 1111 1111 1111"),
    ("credit_card", "4111-1111-1111-1111"),
    ("credit_card", "5500005555555559"),
    ("credit_card", "3782 822463 10005"),  # Amex layout.
]

NEAR_MISSES = [
    "4111 1111 1111 1112",  # 16 digits failing Luhn.
    "1234567812345678",  # Failing Luhn.
    "0000 0000 0000 0000",  # Passes Luhn but is a placeholder.
    "Python 3.11.7",
    "999.1.1.1",
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4.5",
    "version 10.0.19041.1234",
    "in 2024",
    "on 2024-01-15",
    "on 15.01.2024",
    "on 05.06.2024 10:30",
    "user at example dot com",
    "user@localhost",
    "ISBN 978-3-16-148410-0",
    "ISBN 9783161484100",
    "ISBN 0-306-40615-2",
    "12345",
    "order 1234567",
    "population 1,234,567,890",
    "from 1999-2024",
    "years 2019 2020 2021",
    "pi is 3.1415926535897932384",
    "at 12:30:45",
    "std::vector and a::b",
    "MAC 00:1A:2B:3C:4D:5E",
    "ratio 0.5 0.25",
    "id 0123456789",  # Bare digits without separators are not a national phone number.
]


def test_luhn():
  assert privacy.luhn_valid("4111111111111111")
  assert privacy.luhn_valid("4111 1111-1111 1111")
  assert privacy.luhn_valid("79927398713")
  assert not privacy.luhn_valid("4111111111111112")
  assert not privacy.luhn_valid("")
  assert not privacy.luhn_valid("4111x111")
  assert not privacy.luhn_valid("٤١١١")  # Non-ASCII digits.


@pytest.mark.parametrize(("kind", "value"), POSITIVES)
def test_planted_pii_is_scrubbed_and_counted(kind, value):
  text = f"Contact: {value}, thanks."
  scrubbed, counts = privacy.scrub_pii(text)
  assert scrubbed == f"Contact: {privacy.REPLACEMENTS[kind]}, thanks."
  assert counts == {k: int(k == kind) for k in privacy.KINDS}
  assert privacy.find_pii(text) == [(kind, 9, 9 + len(value))]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_not_scrubbed(text):
  scrubbed, counts = privacy.scrub_pii(f"Note: {text}.")
  assert scrubbed == f"Note: {text}."
  assert sum(counts.values()) == 0


def test_mixed_text_counts_and_kinds_filter():
  text = (
      "Mail ann@corp.io or bob@corp.io, call +1 415 555 2671, server 10.1.2.3, "
      "card 4111 1111 1111 1111; Python 3.11.7 released 2024-01-15."
  )
  scrubbed, counts = privacy.scrub_pii(text)
  assert counts == {"email": 2, "phone": 1, "ip": 1, "credit_card": 1}
  assert scrubbed == (
      "Mail <EMAIL> or <EMAIL>, call <PHONE>, server <IP>, "
      "card <CREDIT_CARD>; Python 3.11.7 released 2024-01-15."
  )
  only_email, counts = privacy.scrub_pii(text, kinds=("email",))
  assert counts == {"email": 2}
  assert "10.1.2.3" in only_email and "<EMAIL>" in only_email
  assert [k for k, _, _ in privacy.find_pii(text, ("ip", "phone"))] == ["phone", "ip"]
  with pytest.raises(ValueError, match="Unknown PII"):
    privacy.scrub_pii(text, kinds=("ssn",))


def test_overlaps_resolve_to_one_match():
  # Digits inside an e-mail address are part of the address, not a phone number.
  assert privacy.scrub_pii("x 555-123-4567@example.com y")[0] == "x <EMAIL> y"
  assert privacy.scrub_pii("")[0] == ""
  assert privacy.find_pii("nothing here") == []
