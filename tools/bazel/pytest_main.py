"""Bazel's entry point for a pytest file: `pytest_main.py tests/test_x.py` runs pytest on it.

Bazel starts a test in its runfiles tree, a mirror of the checkout. The test sees what `make test`
sees: the checkout root importable, also by `python -m ...` subprocesses (PYTHONPATH), and the
interpreter's folder first on PATH. Bazel gets JUnit XML; no cache is written into the runfiles
tree (no pytest cache, Hypothesis's database in the test's own temporary folder). TMPDIR stays
as Bazel sets it: a Unix socket's path in a pytest tmp_path must fit in 108 bytes.
Exits with pytest's status.
"""

import os
import sys

import pytest


def _prepend_env_path(name, entry):
  parts = [p for p in os.environ.get(name, "").split(os.pathsep) if p and p != entry]
  os.environ[name] = os.pathsep.join([entry] + parts)


def main(argv):
  if len(argv) < 2:
    sys.exit("usage: pytest_main.py TEST_FILE [PYTEST_ARGS...]")
  # Bazel runs a test in its workspace's runfiles folder; outside Bazel, in the current one.
  root = os.getcwd()
  if "TEST_SRCDIR" in os.environ and "TEST_WORKSPACE" in os.environ:
    root = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"])
    os.chdir(root)
  if root not in sys.path:
    sys.path.insert(0, root)
  _prepend_env_path("PYTHONPATH", root)
  _prepend_env_path("PATH", os.path.dirname(sys.executable))
  tmp = os.environ.get("TEST_TMPDIR")
  if tmp:
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tmp, ".hypothesis"))
  args = list(argv[1:]) + ["-p", "no:cacheprovider"]
  if os.environ.get("XML_OUTPUT_FILE"):
    args.append("--junitxml=" + os.environ["XML_OUTPUT_FILE"])
  return pytest.main(args)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
