"""JSON request parsing shared by the HTTP endpoints (`jaxlm.serve`, `jaxlm.openai_api`)."""

from __future__ import annotations

import json
import math


class BadRequest(ValueError):
  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


def _number(body, name, default, lo, hi, integer=False):
  v = body.get(name, default)
  ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
  if isinstance(v, bool) or not ok_type:
    raise BadRequest(f"'{name}' must be {'an integer' if integer else 'a number'}, got "
                     f"{json.dumps(v)[:80]}.")
  if (isinstance(v, float) and not math.isfinite(v)) or not lo <= v <= hi:  # Ints: exact.
    raise BadRequest(f"'{name}'={str(v)[:40]} is out of range; use {lo}..{hi}.")
  return v


def parse_json(raw: bytes) -> dict:
  try:
    body = json.loads(raw.decode("utf-8"))
  except RecursionError as e:
    raise BadRequest("The body is nested too deeply to parse; send a flat JSON object.") from e
  except (UnicodeDecodeError, ValueError) as e:  # ValueError: also over-long integers.
    raise BadRequest(f"The body is not valid JSON: {str(e)[:200]}.") from e
  if not isinstance(body, dict):
    raise BadRequest("The body must be a JSON object like {\"prompt\": \"...\"}.")
  return body
