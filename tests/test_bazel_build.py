"""The Bazel build covers the tree: every test file has a target, every Python folder a library.

Test files keep being added; `make bazel-test` runs only those that tests/BUILD names, so this
check (run by `make test`) fails when one is missing. It reads the BUILD files as text and does
not need Bazel.
"""

import fnmatch
import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BAZEL_FILES = ("WORKSPACE", "BUILD", "BUILD.bazel", ".bazelrc")

_PYTEST_TEST = re.compile(r"\bpytest_test\(\s*(?:src\s*=\s*)?\"([^\"]+)\"")
_EXCLUDED_BLOCK = re.compile(r"^NOT_UNDER_BAZEL\s*=\s*\{(.*?)^\}", re.S | re.M)
_EXCLUDED_ENTRY = re.compile(r"\"([^\"]+)\"\s*:\s*\"([^\"]*)\"")
_LIBRARY = re.compile(r"\b(?:py_library|project_library)\(")
# A quoted absolute path such as "/home/me/.venv/bin/python" (labels start with // : or @).
_ABSOLUTE_PATH = re.compile(r"[\"'=\s]/(?!/)[\w.-]+/")


def _read(path):
  return path.read_text(encoding="utf-8")


def _comment_free(text):
  return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def _ignored_dirs():
  """Top-level folders Bazel does not look into (.bazelignore) and other non-source folders."""
  ignored = {"third_party"}
  bazelignore = ROOT / ".bazelignore"
  if bazelignore.exists():
    ignored.update(line.strip().strip("/") for line in _read(bazelignore).splitlines()
                   if line.strip() and not line.startswith("#"))
  return ignored


def _source_files(pattern):
  """Files matching `pattern` below the root, outside ignored, hidden and Bazel output folders."""
  ignored = _ignored_dirs()
  for folder, subfolders, files in os.walk(ROOT):
    skip = ignored if pathlib.Path(folder) == ROOT else set()
    subfolders[:] = sorted(d for d in subfolders if not (
        d.startswith((".", "bazel-")) or d == "__pycache__" or d in skip))
    for name in sorted(fnmatch.filter(files, pattern)):
      yield pathlib.Path(folder) / name


def _tests_build():
  return _comment_free(_read(TESTS / "BUILD"))


def _excluded_tests():
  """NOT_UNDER_BAZEL in tests/BUILD: test file (relative to tests/) -> reason."""
  block = _EXCLUDED_BLOCK.search(_read(TESTS / "BUILD"))
  return dict(_EXCLUDED_ENTRY.findall(_comment_free(block.group(1)))) if block else {}


def _test_files():
  files = set(_source_files("test_*.py")) | set(_source_files("*_test.py"))
  return sorted(p.relative_to(TESTS).as_posix() for p in files if TESTS in p.parents)


def test_every_test_file_has_a_bazel_target():
  declared = set(_PYTEST_TEST.findall(_tests_build()))
  excluded = _excluded_tests()
  missing = [f for f in _test_files() if f not in declared and f not in excluded]
  assert not missing, (
      "tests/BUILD has no target for %s: add a line `pytest_test(\"%s\")`, or list the file "
      "in NOT_UNDER_BAZEL with the reason." % (", ".join(missing), missing[0]))


def test_every_bazel_test_target_names_an_existing_file():
  stale = [f for f in _PYTEST_TEST.findall(_tests_build()) if not (TESTS / f).is_file()]
  assert not stale, "tests/BUILD names test files that do not exist: %s" % ", ".join(stale)


def test_every_exclusion_gives_a_reason():
  for test_file, reason in _excluded_tests().items():
    assert (TESTS / test_file).is_file(), "NOT_UNDER_BAZEL names a missing file: " + test_file
    assert reason.strip(), "NOT_UNDER_BAZEL in tests/BUILD gives no reason for " + test_file


def test_every_python_folder_is_in_a_package_with_a_py_library():
  problems = set()
  for py_file in _source_files("*.py"):
    folder = py_file.parent
    if folder == ROOT:
      continue  # setup.py and the like are not part of the Bazel build.
    while folder != ROOT and not (folder / "BUILD").exists():
      folder = folder.parent
    rel = py_file.parent.relative_to(ROOT).as_posix()
    if folder == ROOT:
      problems.add("%s/ has .py files but no BUILD file (in it or a parent folder)" % rel)
    elif not _LIBRARY.search(_comment_free(_read(folder / "BUILD"))):
      problems.add("%s/BUILD declares no py_library (project_library)" %
                   folder.relative_to(ROOT).as_posix())
  assert not problems, "; ".join(sorted(problems))


@pytest.mark.parametrize("name", ["tfrs_attenmixer", "data", "trainer", "serving"])
def test_each_installed_package_has_its_library(name):
  build = ROOT / name / "BUILD"
  assert build.is_file(), "%s has no BUILD file" % name
  assert re.search(r"name\s*=\s*\"%s\"" % name, _comment_free(_read(build))), (
      "%s/BUILD declares no target named %s" % (name, name))


def test_bazel_files_name_no_absolute_path():
  """A fresh clone lives in another folder: the interpreter's path is computed, not committed."""
  files = [p for name in BAZEL_FILES for p in _source_files(name)]
  files += list(_source_files("*.bzl"))
  assert {ROOT / "WORKSPACE", ROOT / ".bazelrc"} <= set(files)
  for path in files:
    for number, line in enumerate(_comment_free(_read(path)).splitlines(), 1):
      assert not _ABSOLUTE_PATH.search(line), (
          "%s:%d names an absolute path, which differs in another checkout: %s" %
          (path.relative_to(ROOT), number, line.strip()))
