"""The trainer as users run it: bad configuration, kill-and-resume, MirroredStrategy, multi-worker.

Every test runs `python -m trainer.main` in real processes on a small synthetic dataset.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_module

DATA = ["--dataset=synthetic", "--synthetic_items=300", "--synthetic_sessions=3000",
        "--num_shards=4"]
SMALL = [*DATA, "--embedding_dim=32", "--num_heads=4", "--export_indexes=", "--seed=5"]
# No dropout: replicas then differ from a single process only by the order of float sums.
NO_DROPOUT = ["--dropout=0", "--attention_dropout=0", "--table_dropout=0"]


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("prepared")
  result = run_module("data.prepare", *DATA, f"--output_dir={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  return out


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


def metrics(run_dir):
  with open(os.path.join(run_dir, "metrics.json")) as f:
    return json.load(f)


# ---------------------------------------------------------------------------------------------
# Bad configuration fails in the first seconds, before anything is written.

@pytest.mark.parametrize("flags,env,message", [
    (["--dataset=nope"], {}, "value should be one of"),
    (["--num_heads=3"], {}, "num_heads (3) must divide embedding_dim (32)"),
    (["--readout=lstm"], {}, "readout must be one of"),
    (["--batch_size=0"], {}, "batch_size must be >= 1"),
    (["--strategy=multi_worker"], {}, "needs the TF_CONFIG environment variable"),
    (["--strategy=multi_worker"], {"TF_CONFIG": "{cluster: "}, "TF_CONFIG is not valid JSON"),
    (["--strategy=multi_worker"], {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, '
                                                '"task": {"type": "worker", "index": 3}}'},
     "is not in the cluster"),
    (["--export_indexes=faiss"], {}, "unknown index ['faiss']"),
    (["--dataset=retailrocket", "--data_dir=/nonexistent"], {}, "exists only as preprocessed"),
])
def test_bad_configuration_fails_fast_and_writes_nothing(tmp_path, flags, env, message):
  started = time.time()
  args = [*SMALL, f"--output_dir={tmp_path / 'prepared'}", f"--run_dir={tmp_path / 'run'}", *flags]
  result = run_module("trainer.main", *args, env=env)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert time.time() - started < 60
  assert not (tmp_path / "run").exists() and not (tmp_path / "prepared").exists()


def test_help_explains_every_flag():
  result = run_module("trainer.main", "--helpfull")
  for flag in ("--num_levels", "--level_aggregation", "--encoder", "--readout", "--loss",
               "--strategy", "--learning_rate", "--lr_decay_epochs", "--patience", "--variant",
               "--mixed_precision", "--data_dir", "--run_dir", "--export_dir"):
    assert flag in result.stdout, flag


# ---------------------------------------------------------------------------------------------
# Fault tolerance: SIGKILL in the middle of an epoch, restart, same final weights.

def test_sigkill_mid_epoch_then_resume_gives_bit_identical_weights(tmp_path, prepared_dir):
  flags = ["--epochs=2", "--checkpoint_every_steps=20"]
  train(tmp_path / "uninterrupted", prepared_dir, *flags)

  run = tmp_path / "killed"
  process = train(run, prepared_dir, *flags, background=True)
  # The first epoch has 134 steps: wait for the checkpoint of step 60, then kill at once.
  deadline = time.time() + 300
  while not (run / "checkpoints" / "ckpt-60.index").exists():
    assert process.poll() is None and time.time() < deadline, process.stdout.read()[-3000:]
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  resumed = train(run, prepared_dir, *flags)
  assert "Resumed from" in resumed.stderr and "epoch 0, step 60 of 134" in resumed.stderr

  expected = checkpoint_weights(tmp_path / "uninterrupted" / "checkpoints")
  got = checkpoint_weights(run / "checkpoints")
  assert expected.keys() == got.keys() and len(expected) > 10
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  assert metrics(run)["test"] == metrics(tmp_path / "uninterrupted")["test"]


def test_non_finite_loss_stops_training_naming_the_step(tmp_path, prepared_dir):
  # A scale of 3e38 makes the logits overflow float32: the loss is not finite at the first step.
  args = [*SMALL, f"--output_dir={prepared_dir}", f"--run_dir={tmp_path}", "--scale=3e38"]
  result = run_module("trainer.main", *args)
  assert result.returncode == 3
  assert "training loss is nan at epoch 1, step 1 (global step 1)" in result.stderr
  assert "no checkpoint had been written yet" in result.stderr
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------
# Distribution: the same global batch gives the same training, up to float summation order.

# Tolerance, after 60 steps without dropout. Summation order changes the last bits of gradients;
# Adam divides by sqrt(v), so where a gradient is near zero such a difference can move a weight by
# up to one step (the learning rate, 1e-3): measured here, max 9e-4 and mean 1.8e-6 after 3 steps,
# mean 3.5e-5 after 60. So: every weight within two Adam steps (2e-3), the mean absolute
# difference below 1e-4, and the metrics within 0.5 percentage points.
MAX_WEIGHT_DIFFERENCE = 2e-3
MEAN_WEIGHT_DIFFERENCE = 1e-4
METRIC_TOLERANCE = 0.5
DISTRIBUTED = ["--epochs=1", "--max_steps_per_epoch=60", "--batch_size=64", "--shard_policy=data",
               "--evaluate_test_every_epoch=false", *NO_DROPOUT]


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, prepared_dir):
  run = tmp_path_factory.mktemp("single")
  train(run, prepared_dir, *DISTRIBUTED)
  return run


def assert_same_training(run, reference):
  expected = checkpoint_weights(reference / "checkpoints")
  got = checkpoint_weights(run / "checkpoints")
  assert expected.keys() == got.keys()
  differences = np.concatenate([np.abs(got[name] - expected[name]).ravel() for name in expected])
  assert differences.max() <= MAX_WEIGHT_DIFFERENCE, differences.max()
  assert differences.mean() <= MEAN_WEIGHT_DIFFERENCE, differences.mean()
  ours, theirs = metrics(run)["valid"], metrics(reference)["valid"]
  for name in ("hr_at_20", "mrr_at_20", "hr_at_5"):
    assert abs(ours[name] - theirs[name]) <= METRIC_TOLERANCE, (name, ours, theirs)


def test_mirrored_strategy_over_two_logical_cpus(tmp_path, prepared_dir, single_process_run):
  result = train(tmp_path, prepared_dir, *DISTRIBUTED, "--num_cpu_devices=2")
  assert "with 2 replica(s)" in result.stderr
  assert metrics(tmp_path)["replicas"] == 2
  assert_same_training(tmp_path, single_process_run)


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_multi_worker_two_processes_train_in_sync(tmp_path, prepared_dir, single_process_run):
  workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
  processes = []
  for index in range(2):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    processes.append(train(tmp_path, prepared_dir, *DISTRIBUTED, "--strategy=multi_worker",
                           env={"TF_CONFIG": json.dumps(tf_config)}, background=True))
  outputs = []
  for process in processes:
    try:
      outputs.append(process.communicate(timeout=600)[0])
    finally:
      process.kill()
    assert process.returncode == 0, outputs[-1][-4000:]
  fingerprints = [[line.split("Weights fingerprint: ")[1] for line in out.splitlines()
                   if "Weights fingerprint: " in line] for out in outputs]
  assert len(fingerprints[0]) == 1 and fingerprints[0] == fingerprints[1]  # same weights
  assert metrics(tmp_path)["replicas"] == 2
  assert_same_training(tmp_path, single_process_run)
  # Only the chief writes results; the other worker's checkpoints are scratch.
  assert (tmp_path / "workers" / "worker-1").exists()
