"""The embedded default corpus: the Python standard library's own documentation.

Real English technical prose that ships with every interpreter, so the default
config trains with no network and no files: `pydoc_data.topics` (the language
reference topics) plus the docstrings of every standard-library module, class
and function, read with `ast` (nothing is imported). One topic or docstring is
one document; order is by module path; about 5% of documents, chosen by a hash
of their text, form the validation split.

It is a tfds builder, prepared once to array_record, so it flows through the
same tfds -> grain path as every other dataset.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import sysconfig
from collections.abc import Iterator

import tensorflow_datasets as tfds

NAME = "jaxlm_stdlib_docs"
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "idle_test", "test", "tests"}


def python_tag() -> str:
  return f"py{sys.version_info.major}.{sys.version_info.minor}"


def is_validation(text: str, fraction: float) -> bool:
  """Deterministic, order-free split: a document's hash decides its split."""
  h = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")
  return (h % 1_000_000) < fraction * 1_000_000


def iter_documents() -> Iterator[tuple[str, str]]:
  """Yields (key, text) for every topic and docstring, sorted by module path."""
  import pydoc_data.topics as topics  # Part of the standard library.

  for name in sorted(topics.topics):
    text = topics.topics[name].strip()
    if text:
      yield f"pydoc_data.topics:{name}", text
  root = sysconfig.get_paths()["stdlib"]
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("test"))
    for fn in sorted(filenames):
      if not fn.endswith(".py") or fn.startswith("test_"):
        continue
      path = os.path.join(dirpath, fn)
      rel = os.path.relpath(path, root)
      try:
        with open(path, "rb") as f:
          tree = ast.parse(f.read(), filename=rel)
      except (SyntaxError, ValueError, OSError):
        continue  # A few files are deliberately invalid Python (e.g. bad encodings).
      for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
          doc = ast.get_docstring(node)
          if doc and doc.strip():
            where = getattr(node, "name", "") or "<module>"
            yield f"{rel}:{getattr(node, 'lineno', 0)}:{where}", doc.strip()


class JaxlmStdlibDocs(tfds.core.GeneratorBasedBuilder):
  """tfds builder for the embedded corpus (one config per Python minor version)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "pydoc topics + stdlib docstrings, hash split at 5%."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=python_tag(), description="This interpreter.")]
  VAL_FRACTION = 0.05

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    docs = list(iter_documents())
    digest = hashlib.sha256()
    for key, text in docs:
      digest.update(key.encode() + b"\0" + text.encode("utf-8") + b"\0")
    self.info.metadata["python_version"] = sys.version.split()[0]
    self.info.metadata["content_sha256"] = digest.hexdigest()
    self.info.metadata["num_documents"] = len(docs)
    val = [is_validation(t, self.VAL_FRACTION) for _, t in docs]
    return {
        "train": self._generate_examples([d for d, v in zip(docs, val, strict=True) if not v]),
        "validation": self._generate_examples([d for d, v in zip(docs, val, strict=True) if v]),
    }

  def _generate_examples(self, docs):
    for i, (_, text) in enumerate(docs):
      yield i, {"text": text}
