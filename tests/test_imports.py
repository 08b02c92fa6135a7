"""The package has no import cycles (issue #13 item 7).

The graph counts every `import jaxlm...` / `from jaxlm... import` in a module,
including those inside functions: a function-level import only postpones a cycle.
"""

import ast
import os
import subprocess
import sys

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxlm")


def _module_name(path: str, root: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def import_graph(root: str = PKG) -> dict[str, set[str]]:
  """{module: jaxlm modules it imports} for every .py file under `root`."""
  files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".py")]
  names = {_module_name(f, root) for f in files}
  graph: dict[str, set[str]] = {}
  for f in files:
    mod = _module_name(f, root)
    deps = set()
    with open(f) as fh:
      tree = ast.parse(fh.read())
    for node in ast.walk(_without_main_block(tree)):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
      else:
        continue
      for t in targets:
        while t and t not in names:  # `from jaxlm import x` names module jaxlm.x if it exists.
          t = t.rpartition(".")[0]
        if t and t != mod and t != "jaxlm" and not mod.startswith(t + "."):
          deps.add(t)
    graph[mod] = deps
  return graph


def _without_main_block(tree: ast.Module) -> ast.Module:
  """Drops `if __name__ == "__main__":` blocks: they run only when the file is the script
  (module `__main__`), so an import there (e.g. of `jaxlm.main` for its flags) is no cycle."""
  body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))]
  return ast.Module(body=body, type_ignores=[])


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as [a, b, ..., a], or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(m: str) -> list[str] | None:
    state[m] = 1
    stack.append(m)
    for d in sorted(graph.get(m, ())):
      if state.get(d) == 1:
        return stack[stack.index(d):] + [d]
      if d not in state and (c := visit(d)):
        return c
    stack.pop()
    state[m] = 2
    return None

  for m in sorted(graph):
    if m not in state and (c := visit(m)):
      return c
  return None


def test_no_import_cycles():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_detector_finds_an_injected_cycle(tmp_path):
  """Negative control: a package whose a -> b -> a (one import inside a function) fails."""
  pkg = tmp_path / "jaxlm"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from jaxlm import b\n")
  (pkg / "b.py").write_text("def f():\n  from jaxlm import a\n  return a\n")
  (pkg / "c.py").write_text("import jaxlm.a\n")
  graph = import_graph(str(pkg))
  assert graph["jaxlm.c"] == {"jaxlm.a"}
  assert find_cycle(graph) in (["jaxlm.a", "jaxlm.b", "jaxlm.a"], ["jaxlm.b", "jaxlm.a", "jaxlm.b"])
  (pkg / "b.py").write_text("def f():\n  return 1\n")
  assert find_cycle(import_graph(str(pkg))) is None


@pytest.mark.parametrize("module", ["jaxlm.main", "jaxlm.evaluate", "jaxlm.train",
                                    "jaxlm.finetune", "jaxlm.generate"])
def test_entry_modules_import_alone(module):
  """Each imports in a fresh interpreter (an import cycle there raises ImportError)."""
  r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 0, r.stderr[-2000:]
