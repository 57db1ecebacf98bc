"""The project's imports: no cycle between modules, the packages in layers, a lean model server.

Imports flow one way, from the library to the commands:

    tfrs_attenmixer  <-  data  <-  trainer  <-  serving  <-  benchmarks

A module imports modules of its own package and of the packages to its left, never of one to its
right, and no chain of imports leads from a module back to itself. The graph is read from the
source with `ast`, imports inside functions included: an import deferred into a function is a
dependency all the same. The model server (`python -m serving.server`) does not import the
code that prepares datasets (`data.prepare`, its flags, the dataset registry, the raw-data
download and preprocessors): it reads exported SavedModels only.
"""

import ast
import collections
import json
import os
import subprocess
import sys

from conftest import ROOT

LAYERS = ("tfrs_attenmixer", "data", "trainer", "serving", "benchmarks")
# The data-preparation code, which the model server must not import.
PREPARATION = ("data.prepare", "data.prepare_config", "data.flags", "data.registry",
               "data.download", "data.protocols", "data.raw_formats", "data.synthetic",
               "data.session_files", "data.events", "data.events_config", "data.events_flags",
               "data.events_reader", "data.prepared_output", "data.events_beam",
               "data.prepare_beam")
SERVER = "serving.server"


def project_modules():
  """{dotted module name: file path} of every module of the `LAYERS` packages."""
  modules = {}
  for package in LAYERS:
    for folder, subfolders, files in os.walk(os.path.join(ROOT, package)):
      subfolders[:] = sorted(d for d in subfolders
                             if not d.startswith((".", "bazel-")) and d != "__pycache__")
      for name in sorted(files):
        if name.endswith(".py") and not name.startswith("."):
          path = os.path.join(folder, name)
          dotted = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
          modules[dotted.removesuffix(".__init__")] = path
  return modules


def imports_of(name, path, modules):
  """{project module: line of its first import} for module `name`, imports inside functions too.

  `from package import name` imports `package` and, when it is a module, `package.name`.
  """
  found = {}
  is_package = os.path.basename(path) == "__init__.py"
  with open(path, encoding="utf-8") as source:
    tree = ast.parse(source.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: from the module's package (a package's own name for __init__)
        parts = name.split(".")
        parts = parts[:len(parts) - node.level + (1 if is_package else 0)]
        base = ".".join(parts + ([base] if base else []))
      targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
    else:
      continue
    for target in targets:
      if target in modules and target != name:
        found[target] = min(found.get(target, node.lineno), node.lineno)
  return found


def import_graph():
  """{module: {imported module: line}} over the project's modules."""
  modules = project_modules()
  return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph):
  """One shortest cycle per strongly connected component of `graph`, as [a, b, ..., a]."""
  index, low, stack, on_stack, components = {}, {}, [], set(), []

  def visit(root):  # Tarjan's algorithm, iterative (no recursion limit)
    work = [(root, iter(sorted(graph[root])))]
    index[root] = low[root] = len(index)
    stack.append(root)
    on_stack.add(root)
    while work:
      node, edges = work[-1]
      step = next(edges, None)
      if step is not None:
        if step not in index:
          index[step] = low[step] = len(index)
          stack.append(step)
          on_stack.add(step)
          work.append((step, iter(sorted(graph[step]))))
        elif step in on_stack:
          low[node] = min(low[node], index[step])
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        component = set()
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.add(member)
          if member == node:
            break
        if len(component) > 1 or node in graph[node]:
          components.append(component)

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return [_shortest_cycle(graph, min(component), component) for component in components]


def _shortest_cycle(graph, start, within):
  """The shortest path start -> ... -> start inside the node set `within` (breadth first)."""
  previous = {}
  queue = collections.deque([start])
  while queue:
    node = queue.popleft()
    for step in sorted(graph[node]):
      if step not in within:
        continue
      if step == start:
        path = [node]
        while path[-1] != start:
          path.append(previous[path[-1]])
        return [start] + path[::-1][1:] + [start]
      if step not in previous:
        previous[step] = node
        queue.append(step)
  raise AssertionError(f"{start} is on no cycle within {sorted(within)}")


def _describe(graph, cycle):
  return " -> ".join(cycle) + "  (" + ", ".join(
      f"{a} imports {b} on line {graph[a][b]}" for a, b in zip(cycle, cycle[1:])) + ")"


def test_cycles_are_found_and_named():
  graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e": 5}}
  assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["e", "e"]]
  assert _describe(graph, ["e", "e"]) == "e -> e  (e imports e on line 5)"
  assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_the_graph_covers_every_package():
  graph = import_graph()
  assert {name.split(".")[0] for name in graph} == set(LAYERS)
  # Imports inside functions count: trainer.main exports only at the end of training.
  assert "trainer.export" in graph["trainer.main"]
  assert "data.prepare" in graph["trainer.main"]


def test_no_import_cycle_between_modules():
  graph = import_graph()
  found = cycles(graph)
  assert not found, "import cycles:\n" + "\n".join(_describe(graph, c) for c in found)


def test_packages_import_only_lower_layers():
  graph = import_graph()
  layer = {package: rank for rank, package in enumerate(LAYERS)}
  upward = [f"{module} imports {target} (line {line}): {target.split('.')[0]} is above "
            f"{module.split('.')[0]}"
            for module, targets in sorted(graph.items()) for target, line in sorted(targets.items())
            if layer[target.split(".")[0]] > layer[module.split(".")[0]]]
  assert not upward, ("imports flow " + " <- ".join(LAYERS) + "; these go the other way:\n"
                      + "\n".join(upward))


def test_the_server_imports_no_data_preparation_code():
  graph = import_graph()
  parent = {SERVER: None}
  queue = collections.deque([SERVER])
  while queue:
    node = queue.popleft()
    for step in sorted(graph[node]):
      if step not in parent:
        parent[step] = node
        queue.append(step)

  def chain(module):
    path = [module]
    while parent[path[-1]] is not None:
      path.append(parent[path[-1]])
    return " -> ".join(reversed(path))

  reached = [chain(module) for module in PREPARATION if module in parent]
  assert not reached, "the model server reaches data-preparation code:\n" + "\n".join(reached)


def _run_python(script):
  """Runs `script` in a fresh interpreter of the checkout; returns its standard output."""
  env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
         "TF_CPP_MIN_LOG_LEVEL": "3"}
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def test_the_server_process_loads_no_data_preparation_code():
  output = _run_python(
      f"import json, sys\nimport {SERVER}\n"
      f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {LAYERS!r})))")
  loaded = set(json.loads(output.splitlines()[-1]))
  assert SERVER in loaded
  assert not set(PREPARATION) & loaded, sorted(set(PREPARATION) & loaded)


def test_importing_data_prepare_defines_no_flags():
  _run_python("import data.prepare\nfrom absl import flags\n"
              "assert 'dataset' not in flags.FLAGS, 'importing data.prepare defined --dataset'\n"
              "assert 'events' not in flags.FLAGS, 'importing data.prepare defined --events'")
