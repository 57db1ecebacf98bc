"""`python -m trainer.main` in real processes on a small synthetic dataset: the flags, the
runs and the readers of their results shared by test_trainer and test_distribution (the prepared
folder: conftest.prepared_dir)."""

import json
import os
import subprocess
import sys

from conftest import ROOT, run_module

DATA = ["--dataset=synthetic", "--synthetic_items=300", "--synthetic_sessions=3000",
        "--num_shards=4"]
# One stage (the full protocol's two are tested on their own in test_trainer).
# Batches keep max_length: cut ones (the default --length_multiple) compile once per width, ~5 s
# a run here; their training is tested in test_catalogue_softmax, test_evaluation and the
# five-command test of test_events.
SMALL = [*DATA, "--embedding_dim=32", "--num_heads=4", "--export_indexes=", "--seed=5",
         "--protocol=selection", "--length_multiple=0"]
# No dropout: replicas then differ from a single process only by the order of float sums.
NO_DROPOUT = ["--dropout=0", "--attention_dropout=0", "--table_dropout=0"]


def train(run_dir, prepared_dir, *flags, env=None, background=False):
  args = [*SMALL, f"--output_dir={prepared_dir}", f"--run_dir={run_dir}", *flags]
  if background:
    full_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "trainer.main", *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  result = run_module("trainer.main", *args, env=env)
  assert result.returncode == 0, result.stderr[-4000:]
  return result


def checkpoint_weights(directory):
  """All model variables of the latest checkpoint in `directory`, by name."""
  import tensorflow as tf
  path = tf.train.latest_checkpoint(directory)
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
          if name.startswith("model/") and "ranking_metrics" not in name}


def train_once(tmp_path_factory, prepared_dir, name, flags):
  """A finished reference run in a new folder."""
  run = tmp_path_factory.mktemp(name)
  train(run, prepared_dir, *flags)
  return run


def weights_of_both(run, reference):
  """The latest checkpoint's model variables of `reference` and of `run` (same names)."""
  expected = checkpoint_weights(reference / "checkpoints")
  got = checkpoint_weights(run / "checkpoints")
  assert expected.keys() == got.keys() and len(expected) > 10
  return expected, got


def metrics(run_dir):
  with open(os.path.join(run_dir, "metrics.json")) as f:
    return json.load(f)
