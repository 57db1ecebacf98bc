"""Macros for the project's BUILD files.

`project_library`: a package folder's Python files and data files as one `py_library`.
`pytest_test`: one `py_test` per pytest file, run by //tools/bazel:pytest_main.py.
"""

# The project's libraries: a test may import any of them, as it can under `make test`.
PROJECT_LIBRARIES = [
    "//benchmarks",
    "//data",
    "//examples",
    "//serving",
    "//tfrs_attenmixer",
    "//trainer",
]

_MAIN = "//tools/bazel:pytest_main.py"

# Files in a package folder that are not the package's data: Python files (srcs), Bazel files,
# caches, and hidden or temporary files (an editor's or a writer's, before their rename).
_NOT_DATA = [
    "**/*.py",
    "**/*.pyc",
    "**/__pycache__/**",
    "**/BUILD",
    "**/BUILD.bazel",
    "**/*.bzl",
    "**/.*",
    "**/.*/**",
    "**/*.tmp",
    "**/*.tmp-*",
    "**/*~",
]

def project_library(name, srcs = None, data = None, deps = [], **kwargs):
    """Declares `py_library` `name` of all `.py` files under this package folder.

    The folder's other files (configs, small fixtures) are its data. The workspace root is on
    the import path, so `import tfrs_attenmixer` works for every dependent target.

    Args:
      name: the target's name, by convention the folder's name (`//data` is `//data:data`).
      srcs: the Python files; every `.py` file below the folder by default.
      data: the data files; every other file below the folder by default.
      deps: the project libraries this one imports.
      **kwargs: passed to `py_library`.
    """
    native.py_library(
        name = name,
        srcs = native.glob(["**/*.py"], exclude = ["**/.*"]) if srcs == None else srcs,
        data = native.glob(["**/*"], exclude = _NOT_DATA) if data == None else data,
        imports = [".."],
        srcs_version = "PY3",
        deps = deps,
        visibility = ["//visibility:public"],
        **kwargs
    )

def pytest_test(src, name = None, deps = [], data = [], size = "medium", **kwargs):
    """Declares `py_test` `test_x` that runs pytest on `src` (`test_x.py`).

    Args:
      src: the test file, `test_x.py`, in this package.
      name: the target's name; `src` without `.py` by default.
      deps: more `py_library` dependencies besides the project's libraries and `:test_support`.
      data: more data files.
      size: Bazel's test size; its timeout comes from `--test_timeout` in //:.bazelrc.
      **kwargs: passed to `py_test` (e.g. `tags`, `shard_count`, `flaky`).
    """
    if not src.endswith(".py"):
        fail("pytest_test: src must be a .py file, got %s" % src)
    native.py_test(
        name = name or src[:-len(".py")],
        srcs = [src, _MAIN],
        main = _MAIN,
        args = ["$(rootpath %s)" % src],
        python_version = "PY3",
        srcs_version = "PY3",
        size = size,
        deps = PROJECT_LIBRARIES + [":test_support"] + deps,
        data = ["//:pytest.ini"] + data,
        **kwargs
    )
