"""Distributed training as users run it: MirroredStrategy over two logical CPUs and
MultiWorkerMirroredStrategy in two real worker processes on 127.0.0.1, against one process.

Every test runs `python -m trainer.main` in real processes on a small synthetic dataset.
"""

import glob
import json
import os
import socket

import numpy as np
import pytest

from trainer_processes import NO_DROPOUT, metrics, train, train_once, weights_of_both

# ---------------------------------------------------------------------------------------------
# Distribution: the same global batch gives the same training, up to float summation order.

# Tolerance, after 60 steps without dropout. Summation order changes the last bits of gradients;
# Adam divides by sqrt(v), so where a gradient is near zero such a difference can move a weight by
# up to one step (the learning rate, 1e-3): measured here, max 9e-4 and mean 1.8e-6 after 3 steps,
# mean 3.5e-5 after 60. So: every weight within two Adam steps (2e-3), the mean absolute
# difference below 1e-4, and the metrics within 0.5 percentage points. These runs start from
# Keras' initialisers: from the default uniform draw the same reordering grew, in 60 steps, to a
# mean difference of 1-2e-3 on the level projections' kernels (about 2% of their scale) and a max
# of 0.012 on the item table (measured), which would hide a real difference. The uniform draw is
# stateless, so the same in every process (checked over 3 steps in two worker processes below) and
# equal on both replicas of a mirrored model (test_model.test_mirrored_strategy_two_replicas).
MAX_WEIGHT_DIFFERENCE = 2e-3
MEAN_WEIGHT_DIFFERENCE = 1e-4
METRIC_TOLERANCE = 0.5
ONE_EPOCH_NO_DROPOUT = ["--epochs=1", "--batch_size=64", "--shard_policy=data",
                        "--evaluate_test_every_epoch=false", *NO_DROPOUT]
DISTRIBUTED = [*ONE_EPOCH_NO_DROPOUT, "--max_steps_per_epoch=60", "--initialization=keras"]


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, prepared_dir):
  return train_once(tmp_path_factory, prepared_dir, "single", DISTRIBUTED)


def assert_same_training(run, reference, max_difference=MAX_WEIGHT_DIFFERENCE):
  expected, got = weights_of_both(run, reference)
  per_variable = {name: np.abs(got[name] - expected[name]) for name in expected}
  differences = np.concatenate([difference.ravel() for difference in per_variable.values()])
  worst = max(per_variable, key=lambda name: per_variable[name].max())
  assert differences.max() <= max_difference, (worst, differences.max())
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


def train_two_workers(tmp_path, prepared_dir, flags, stages=1):
  """Trains with MultiWorkerMirroredStrategy in two real worker processes on 127.0.0.1 ports and
  checks that both end each of the run's `stages` with the same weights and that only the chief
  wrote results; returns the two processes' outputs."""
  workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
  processes = []
  for index in range(2):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    processes.append(train(tmp_path, prepared_dir, *flags, "--strategy=multi_worker",
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
  assert len(fingerprints[0]) == stages and fingerprints[0] == fingerprints[1]  # same weights
  assert metrics(tmp_path)["replicas"] == 2
  # Only the chief writes results; the other worker's checkpoints are scratch.
  assert glob.glob(str(tmp_path / "**" / "workers" / "worker-1"), recursive=True)
  return outputs


def test_multi_worker_two_processes_train_in_sync(tmp_path, prepared_dir, single_process_run):
  train_two_workers(tmp_path, prepared_dir, DISTRIBUTED)
  assert_same_training(tmp_path, single_process_run)


def test_multi_worker_full_protocol_selects_then_refits_in_sync(tmp_path, prepared_dir):
  """Both stages under MultiWorkerMirroredStrategy: the workers agree on the selected epoch, end
  each stage with the same weights, and the chief writes the run's results."""
  outputs = train_two_workers(
      tmp_path, prepared_dir, ["--protocol=full", "--epochs=2", "--patience=1",
                               "--max_steps_per_epoch=10", "--batch_size=64",
                               "--shard_policy=data", *NO_DROPOUT], stages=2)
  result = metrics(tmp_path)
  assert result["protocol"] == "full" and result["replicas"] == 2
  epochs = result["selection"]["selected_epoch"]
  assert len(result["epochs"]) == epochs and result["config"]["train"]["train_on_valid"]
  for output in outputs:
    assert f"Stage 2 of 2, refit: {epochs} epoch(s)" in output
  assert os.path.isfile(tmp_path / "selection" / "metrics.json")
  assert (tmp_path / "refit" / "metrics.json").is_file()


# The default uniform draw, over 3 steps only (see above): every worker process draws the same
# initial weights as a single process, so the weights part only by summation order, at most by
# two Adam steps (2e-3) per step: measured, max 3.4e-3 (on the item table) and mean 2.2e-5. A draw
# that differed between processes would put them apart by its scale (U(-1/sqrt(32), 1/sqrt(32)):
# 0.09 on average).
UNIFORM_STEPS = 3
UNIFORM_FEW_STEPS = [*ONE_EPOCH_NO_DROPOUT, f"--max_steps_per_epoch={UNIFORM_STEPS}",
                     "--initialization=uniform"]


def test_multi_worker_uniform_draw_matches_a_single_process(tmp_path, prepared_dir):
  train(tmp_path / "single", prepared_dir, *UNIFORM_FEW_STEPS)
  train_two_workers(tmp_path / "workers2", prepared_dir, UNIFORM_FEW_STEPS)
  assert_same_training(tmp_path / "workers2", tmp_path / "single",
                       max_difference=UNIFORM_STEPS * MAX_WEIGHT_DIFFERENCE)
