"""The lab wing (jaxlm/lab): the core never imports it, and its own imports form no cycle."""

import ast
import os
import subprocess
import sys

from conftest import REPO

PKG = os.path.join(REPO, "jaxlm")


def module_name(root: str, path: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def imports_of(path: str, name: str) -> set[str]:
  """Every jaxlm module `path` imports (top-level or inside functions), resolved."""
  found = set()
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # Relative: resolve against this module's package.
        parts = name.split(".")[:-node.level] if not path.endswith("__init__.py") else \
            name.split(".")[:len(name.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      found.add(base)
      found |= {f"{base}.{a.name}" for a in node.names}  # `from jaxlm import lab`.
  return {m for m in found if m == "jaxlm" or m.startswith("jaxlm.")}


def module_files(root: str) -> dict[str, str]:
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(d, f)
        out[module_name(root, path)] = path
  return out


def core_imports_of_lab(root: str) -> list[str]:
  """'core_module -> jaxlm.lab...' for each import of the lab wing outside it."""
  bad = []
  for name, path in sorted(module_files(root).items()):
    if name.split(".")[:2] == ["jaxlm", "lab"]:
      continue
    for m in sorted(imports_of(path, name)):
      if m.split(".")[:2] == ["jaxlm", "lab"]:
        bad.append(f"{name} -> {m}")
  return bad


def lab_cycles(root: str) -> list[list[str]]:
  """Import cycles among the lab's modules (function-level imports count too)."""
  files = {n: p for n, p in module_files(root).items() if n.startswith("jaxlm.lab.")}
  graph = {n: sorted(m for m in imports_of(p, n) if m in files and m != n)
           for n, p in files.items()}
  cycles, state = [], {}

  def visit(n, stack):
    state[n] = "open"
    for m in graph[n]:
      if state.get(m) == "open":
        cycles.append(stack[stack.index(m):] + [m])
      elif m not in state:
        visit(m, stack + [m])
    state[n] = "done"

  for n in sorted(graph):
    if n not in state:
      visit(n, [n])
  return cycles


def test_core_never_imports_the_lab():
  assert os.path.isdir(os.path.join(PKG, "lab"))
  assert core_imports_of_lab(PKG) == []


def test_lab_has_no_import_cycle():
  assert lab_cycles(PKG) == []


def test_checks_catch_a_bad_import(tmp_path):
  """Negative control: the scanners flag a core import of the lab and a lab cycle."""
  pkg = tmp_path / "jaxlm"
  (pkg / "lab").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "lab" / "__init__.py").write_text("")
  (pkg / "train.py").write_text("def f():\n  from jaxlm.lab import plots\n")
  (pkg / "main.py").write_text("from jaxlm import lab\n")
  (pkg / "lab" / "a.py").write_text("from jaxlm.lab import b\n")
  (pkg / "lab" / "b.py").write_text("def g():\n  from . import a\n")
  assert core_imports_of_lab(str(pkg)) == ["jaxlm.main -> jaxlm.lab",
                                           "jaxlm.train -> jaxlm.lab",
                                           "jaxlm.train -> jaxlm.lab.plots"]
  assert lab_cycles(str(pkg)) == [["jaxlm.lab.a", "jaxlm.lab.b", "jaxlm.lab.a"]]


def test_core_runs_without_the_lab_or_matplotlib():
  """Importing every core module in a fresh interpreter loads neither jaxlm.lab nor matplotlib
  (matplotlib is the `[lab]` extra)."""
  core = sorted(n for n in module_files(PKG)
                if n.split(".")[:2] != ["jaxlm", "lab"] and not n.endswith("__main__"))
  code = ("import importlib, sys\n"
          f"for m in {core!r}: importlib.import_module(m)\n"
          "print(sorted(m for m in sys.modules if m.startswith(('jaxlm.lab', 'matplotlib'))))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.strip().splitlines()[-1] == "[]"
