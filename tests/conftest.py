"""Shared fixtures: the shared datasets folder, a small prepared synthetic dataset, subprocesses."""

import os
import subprocess
import sys

import pytest

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The longest files, longest first (`--durations`): `make test` runs files on two workers
# (pytest-xdist, `--dist loadfile`, which hands out files in collection order), so these start
# first and no long file is left running alone at the end. Other files keep their order.
LONGEST_FILES = ("test_trainer.py", "test_reproduce.py", "test_distribution.py", "test_export.py",
                 "test_catalogue_softmax.py", "test_events.py", "test_data_errors.py",
                 "test_server.py")


def pytest_collection_modifyitems(items):
  rank = {name: position for position, name in enumerate(LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within files


def shared_data_dir():
  """`$ATTENMIXER_DATA_DIR` if it holds the shared datasets, else None."""
  directory = os.environ.get("ATTENMIXER_DATA_DIR")
  return directory if directory and os.path.isdir(os.path.join(directory, "gowalla")) else None


requires_shared_data = pytest.mark.skipif(
    shared_data_dir() is None,
    reason="ATTENMIXER_DATA_DIR does not point at the shared datasets (../shared/data); "
    "`make test` sets it when that folder exists")


def run_module(module, *args, env=None, timeout=600, cwd=None):
  """Runs `python -m module args...` in a fresh process; returns the CompletedProcess."""
  full_env = dict(os.environ)
  full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
  full_env.update(env or {})
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                        text=True, env=full_env, timeout=timeout, cwd=cwd or ROOT)


@pytest.fixture(scope="session")
def synthetic_prepared(tmp_path_factory):
  """A small prepared synthetic dataset (300 items, 3,000 sessions, 4 training shards)."""
  from data import registry
  from data.prepare import PrepareConfig, prepare
  config = PrepareConfig(dataset="synthetic", num_shards=4,
                         synthetic=registry.SyntheticOptions(num_items=300, num_sessions=3000,
                                                             seed=7))
  return prepare(config, str(tmp_path_factory.mktemp("prepared")))


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  """The output folder of `python -m data.prepare` on `trainer_processes.DATA` (the synthetic
  dataset of the trainer's process tests), prepared once per test module."""
  from trainer_processes import DATA  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("prepared")
  result = run_module("data.prepare", *DATA, f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  return out
