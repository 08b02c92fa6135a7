"""Detect and scrub personal data: e-mail addresses, phone numbers, IPs, card numbers.

Training text should not teach a model to recite someone's e-mail or card
number, so these are replaced by a placeholder token (`<EMAIL>`, ...) that
keeps the sentence shape. The detectors favour precision on numbers: a
regex proposes a candidate and a small validator rejects what only looks
similar (dates, years, version strings, ISBNs, numbers failing the Luhn
check), because scrubbing every long number would damage maths, code and
tables far more than it protects anyone.

Known limits: phone numbers are only found in international form (`+CC ...`),
North-American form (`(555) 123-4567`, `555-123-4567`) or national form with
a trunk `0` and separators (`030 1234567`, `01 23 45 67 89`); a 4-part
version string such as `1.2.3.4` is indistinguishable from an IPv4 address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

KINDS = ("email", "phone", "ip", "credit_card")
REPLACEMENTS = {
    "email": "<EMAIL>",
    "phone": "<PHONE>",
    "ip": "<IP>",
    "credit_card": "<CREDIT_CARD>",
}
# Overlapping matches starting at the same place: longer wins, then this order.
_PRIORITY = {"email": 0, "ip": 1, "credit_card": 2, "phone": 3}

Span = tuple[int, int]

# --- e-mail ---------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"(?<![\w.%+\-])"
    r"[A-Za-z0-9](?:[A-Za-z0-9._%+\-]{0,62}[A-Za-z0-9_%+\-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
    r"(?![\w\-]|\.[A-Za-z0-9])"
)


def find_emails(text: str) -> list[Span]:
  """Spans of `local@domain.tld` addresses (ASCII; `user at example dot com` is not one)."""
  return [m.span() for m in _EMAIL_RE.finditer(text)]


# --- phone numbers --------------------------------------------------------------------------

# Numbers must not be glued to other digits, words or number punctuation on either side,
# so a phone-shaped piece of a longer number, version or date is never taken.
_NUM_START = r"(?<![\w+.\-/])"
_NUM_END = r"(?![\w]|[.\-/:]\d)"
_GROUP = r"(?:\(\d{1,5}\)|\d{1,5})"
_PHONE_RES = (
    # International: +CC then groups, optional "(0)" trunk marker: +44 (0)20 7946 0958.
    re.compile(
        _NUM_START + r"\+\d{1,3}(?:[ .\-]?\(0\))?(?:[ .\-]?" + _GROUP + r"){1,6}" + _NUM_END
    ),
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-1234.
    re.compile(
        _NUM_START
        + r"(?:1[ .\-])?(?:\([2-9]\d{2}\) ?\d{3}[ .\-]|[2-9]\d{2}(?P<s>[ .\-])\d{3}(?P=s))\d{4}"
        + _NUM_END
    ),
    # National with trunk 0 and separators: 030 1234567, 020 7946 0958, 01 23 45 67 89.
    re.compile(_NUM_START + r"(?:\(0\d{1,4}\)|0\d{1,4})(?:[ .\-/]?\d{2,8}){1,4}" + _NUM_END),
)
_DATE_PREFIX_RE = re.compile(r"\d{1,2}([./\-])\d{1,2}\1\d{2,4}(?!\d)")
_ISBN_BEFORE_RE = re.compile(r"ISBN(?:-1[03])?:?\s*$", re.IGNORECASE)


def _digits(s: str) -> str:
  return re.sub(r"\D", "", s)


def _after_isbn(text: str, start: int) -> bool:
  return bool(_ISBN_BEFORE_RE.search(text[max(0, start - 12) : start]))


def _valid_phone(text: str, start: int, end: int) -> bool:
  s = text[start:end]
  if _after_isbn(text, start):
    return False
  if s.startswith("+"):
    n = len(_digits(s.replace("(0)", "")))
    return 8 <= n <= 15
  n = len(_digits(s))
  if not 9 <= n <= 12:  # 8 digits is a date (20240115) more often than a phone.
    return False
  if s.isdigit() or _DATE_PREFIX_RE.match(s):
    return False
  return True


def find_phones(text: str) -> list[Span]:
  """Spans of phone numbers in international, North-American or trunk-0 national form."""
  spans = set()
  for regex in _PHONE_RES:
    for m in regex.finditer(text):
      if _valid_phone(text, *m.span()):
        spans.add(m.span())
  return sorted(spans)


# --- IP addresses ---------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_RE = re.compile(r"(?<![\w.])" + rf"(?:{_OCTET}\.){{3}}{_OCTET}" + r"(?![\w]|\.\d)")
_IPV6_CANDIDATE_RE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")


def find_ipv4(text: str) -> list[Span]:
  """Dotted quads with every octet in 0..255 (not `1.2.3`, `1.2.3.4.5` or `999.1.1.1`)."""
  return [m.span() for m in _IPV4_RE.finditer(text)]


def find_ipv6(text: str) -> list[Span]:
  """IPv6 addresses (full or `::`-compressed) that `ipaddress` accepts and hold a digit.

  The digit rule keeps C++ scopes like `a::b` and times like `12:30:45` (invalid
  anyway) out; MAC addresses have 6 groups and are rejected by `ipaddress`.
  """
  spans = []
  for m in _IPV6_CANDIDATE_RE.finditer(text):
    s = m.group()
    if not any(c.isdigit() for c in s) or s.count(":") < 2:
      continue
    try:
      ipaddress.IPv6Address(s)
    except ValueError:
      continue
    spans.append(m.span())
  return spans


def find_ips(text: str) -> list[Span]:
  """IPv4 and IPv6 address spans."""
  return sorted(find_ipv4(text) + find_ipv6(text))


# --- credit cards ---------------------------------------------------------------------------

_CARD_RE = re.compile(r"(?<![\w\-.])\d(?:[ \-]?\d){12,18}(?![\w]|[ \-.]?\d)")


def luhn_valid(digits: str) -> bool:
  """Luhn checksum of a digit string (spaces and dashes ignored); False for non-digits."""
  digits = digits.replace(" ", "").replace("-", "")
  if not digits or not digits.isascii() or not digits.isdigit():
    return False
  total = 0
  for i, c in enumerate(reversed(digits)):
    d = ord(c) - 48
    if i % 2:
      d = d * 2 - 9 if d > 4 else d * 2
    total += d
  return total % 10 == 0


def _card_grouping_ok(s: str) -> bool:
  """No separators, or one separator kind in card layouts: 4-4-4-4(-3), 4-6-5, 4-6-4."""
  seps = set(re.findall(r"[ \-]", s))
  if not seps:
    return True
  if len(seps) > 1:
    return False
  groups = [len(g) for g in re.split(r"[ \-]", s)]
  if groups[:-1] and all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4:
    return True
  return groups in ([4, 6, 5], [4, 6, 4])


def find_credit_cards(text: str) -> list[Span]:
  """Spans of 13-19 digit numbers in card layout that pass the Luhn check."""
  spans = []
  for m in _CARD_RE.finditer(text):
    s = m.group()
    digits = _digits(s)
    if (
        13 <= len(digits) <= 19
        and _card_grouping_ok(s)
        and len(set(digits)) > 1
        and luhn_valid(digits)
        and not _after_isbn(text, m.start())
    ):
      spans.append(m.span())
  return spans


# --- all kinds ------------------------------------------------------------------------------

DETECTORS: dict[str, Callable[[str], list[Span]]] = {
    "email": find_emails,
    "phone": find_phones,
    "ip": find_ips,
    "credit_card": find_credit_cards,
}


def _check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
  if isinstance(kinds, str):
    kinds = (kinds,)
  unknown = [k for k in kinds if k not in DETECTORS]
  if unknown:
    raise ValueError(f"Unknown PII kinds {unknown}; known kinds are {list(KINDS)}.")
  return tuple(kinds)


def find_pii(text: str, kinds: Sequence[str] = KINDS) -> list[tuple[str, int, int]]:
  """Non-overlapping `(kind, start, end)` matches sorted by start.

  Where matches overlap, the one starting first wins, then the longer one,
  then e-mail > ip > credit_card > phone.
  """
  found = [(s, e, k) for k in _check_kinds(kinds) for s, e in DETECTORS[k](text)]
  found.sort(key=lambda m: (m[0], -(m[1] - m[0]), _PRIORITY[m[2]]))
  out: list[tuple[str, int, int]] = []
  end = 0
  for s, e, k in found:
    if s >= end:
      out.append((k, s, e))
      end = e
  return out


def scrub_pii(text: str, kinds: Sequence[str] = KINDS) -> tuple[str, dict[str, int]]:
  """Replaces each match by its token (`<EMAIL>`, ...); returns text and counts per kind."""
  kinds = _check_kinds(kinds)
  counts = dict.fromkeys(kinds, 0)
  pieces, pos = [], 0
  for kind, s, e in find_pii(text, kinds):
    pieces.append(text[pos:s])
    pieces.append(REPLACEMENTS[kind])
    counts[kind] += 1
    pos = e
  if pos == 0:
    return text, counts
  pieces.append(text[pos:])
  return "".join(pieces), counts
