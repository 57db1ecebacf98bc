"""The trainer as users run it: bad configuration, kill-and-resume, full disks, the full protocol.

Distributed training: test_distribution.py.

Every test runs `python -m trainer.main` in real processes on a small synthetic dataset.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_module
from trainer_processes import (SMALL, checkpoint_weights, metrics, train, train_once,
                               weights_of_both)

# ---------------------------------------------------------------------------------------------
# Bad configuration fails in the first seconds, before anything is written.

@pytest.mark.parametrize("flags,env,message", [
    (["--dataset=nope", "--data_dir=/nonexistent"], {}, "dataset 'nope' is not registered"),
    (["--dataset=../etc"], {}, "letters, digits"),
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
    (["--protocol=full", "--train_on_valid"], {}, "pass --protocol=selection with it"),
    (["--selection_from=/nonexistent"], {}, "is the full protocol's"),
    (["--protocol=full", "--selection_from=/nonexistent"], {}, "no metrics.json"),
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
  import dataclasses
  from tfrs_attenmixer.config import ModelConfig
  from trainer.config import TrainConfig
  result = run_module("trainer.main", "--helpfull")
  help_text = " ".join(result.stdout.split())
  for cls in (ModelConfig, TrainConfig):
    for field in dataclasses.fields(cls):
      meaning = field.metadata["help"]
      assert len(meaning) > 10, field.name
      # absl wraps the help; its first words follow the flag's name.
      assert f"--{field.name}: {' '.join(meaning.split()[:4])}" in help_text.replace(
          "--[no]", "--"), field.name
  for flag in ("--variant", "--protocol", "--selection_from", "--data_dir", "--run_dir",
               "--export_dir"):
    assert flag in result.stdout, flag


# ---------------------------------------------------------------------------------------------
# Fault tolerance: SIGKILL at any point, full or read-only disks; a restart gives the same weights.

RESUMABLE = ["--epochs=2", "--checkpoint_every_steps=20"]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, prepared_dir):
  return train_once(tmp_path_factory, prepared_dir, "uninterrupted", RESUMABLE)


def assert_same_final_weights(run, reference):
  """Bit-identical weights and test metrics (training is deterministic on one CPU)."""
  expected, got = weights_of_both(run, reference)
  for name in expected:
    np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
  assert metrics(run)["test"] == metrics(reference)["test"]


def latest_checkpoint_is(directory, step):
  """Whether the checkpoint state file (renamed into place, so read whole) names `ckpt-<step>`:
  its files are complete then, which the mere existence of `ckpt-<step>.index` does not say."""
  try:
    with open(directory / "checkpoint") as state:
      return f'model_checkpoint_path: "ckpt-{step}"' in state.read()
  except FileNotFoundError:
    return False


def train_until_checkpoint(run, prepared_dir, step):
  """Starts a RESUMABLE run in the background; returns its process once `ckpt-<step>` is the
  latest complete checkpoint."""
  process = train(run, prepared_dir, *RESUMABLE, background=True)
  deadline = time.time() + 300
  while not latest_checkpoint_is(run / "checkpoints", step):
    assert process.poll() is None and time.time() < deadline, process.stdout.read()[-3000:]
    time.sleep(0.01)
  return process


def test_sigkill_mid_epoch_then_resume_gives_bit_identical_weights(tmp_path, prepared_dir,
                                                                   uninterrupted_run):
  run = tmp_path / "killed"
  # The first epoch has 134 steps: wait for the checkpoint of step 60, then kill at once.
  process = train_until_checkpoint(run, prepared_dir, 60)
  process.send_signal(signal.SIGKILL)
  process.wait()
  resumed = train(run, prepared_dir, *RESUMABLE)
  assert "Resumed from" in resumed.stderr and "epoch 0, step 60 of 134" in resumed.stderr
  assert_same_final_weights(run, uninterrupted_run)


# Runs the trainer with a fault injected: SIGKILL of itself at a chosen point of checkpoint
# writing or export. argv: point, n (the n-th call of the patched function), then trainer flags.
KILL_AT = """
import os, signal, sys, threading
import trainer.main as trainer_main
from absl import app
from tensorflow.python.checkpoint import checkpoint_management
from trainer import push
point, n = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
calls = []
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
def on_nth_call(original, action):
  def patched(*args, **kwargs):
    calls.append(1)
    if len(calls) == n:
      action()
    return original(*args, **kwargs)
  return patched
if point == "before_state_file":  # data and index written, `checkpoint` not yet pointing at them
  checkpoint_management.update_checkpoint_state_internal = on_nth_call(
      checkpoint_management.update_checkpoint_state_internal, kill)
elif point == "while_writing":  # 5 ms into writing the checkpoint's files
  checkpoint_management.CheckpointManager.save = on_nth_call(
      checkpoint_management.CheckpointManager.save, lambda: threading.Timer(0.005, kill).start())
elif point == "during_export":  # SavedModel written to its temporary folder, not yet published
  push.publish = on_nth_call(push.publish, kill)
app.run(trainer_main.main)
"""


def run_with_kill(run, prepared_dir, point, n, *flags):
  args = [*SMALL, f"--output_dir={prepared_dir}", f"--run_dir={run}", *RESUMABLE, *flags]
  return subprocess.run([sys.executable, "-c", KILL_AT, point, str(n), *args], cwd=ROOT,
                        env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.parametrize("point,n", [("before_state_file", 5), ("while_writing", 3),
                                     ("while_writing", 8)])
def test_sigkill_while_writing_a_checkpoint_leaves_a_loadable_one(tmp_path, prepared_dir,
                                                                  uninterrupted_run, point, n):
  run = tmp_path / "run"
  killed = run_with_kill(run, prepared_dir, point, n)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  assert checkpoint_weights(run / "checkpoints")  # the latest checkpoint reads completely
  resumed = train(run, prepared_dir, *RESUMABLE)
  assert "Resumed from" in resumed.stderr
  assert_same_final_weights(run, uninterrupted_run)


def test_sigkill_during_export_leaves_no_broken_version(tmp_path, prepared_dir,
                                                        uninterrupted_run):
  run = tmp_path / "run"
  export = ["--export_indexes=brute_force"]
  killed = run_with_kill(run, prepared_dir, "during_export", 1, *export)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  model_dir = run / "export" / "attenmixer"
  left = os.listdir(model_dir)
  assert len(left) == 1 and left[0].startswith(".tmp-export-"), left  # never a version number
  train(run, prepared_dir, *RESUMABLE, *export)  # the same command again: exports, cleans up
  assert sorted(os.listdir(model_dir)) == ["1"]
  assert_same_final_weights(run, uninterrupted_run)
  from trainer import push
  assert push.validate_saved_model(str(model_dir / "1")).ok


# Disk errors need a small or read-only file system: a tmpfs, which only root can mount.

@pytest.fixture
def tmpfs(tmp_path):
  """Mounts tmpfs file systems under tmp_path: `mount(name, size, read_only=False)`."""
  if os.geteuid() != 0:
    pytest.skip("mounting a tmpfs needs root")
  mounted = []

  def mount(name, size, read_only=False):
    point = tmp_path / name
    point.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
    mounted.append(point)
    return point

  yield mount
  for point in mounted:
    subprocess.run(["umount", "-l", str(point)], check=False)


def test_a_folder_written_before_an_option_existed_reads_as_what_the_code_did_then(tmp_path):
  """A config.json without `initialization` was written when every run used Keras'
  initialisers: it resumes as that run, and is not the run of today's default (uniform)."""
  from trainer import run_dir as run_dir_lib  # pylint: disable=import-outside-toplevel
  from trainer.config import build_config  # pylint: disable=import-outside-toplevel
  record = {"experiment": build_config("gowalla").to_dict(), "dataset": "gowalla"}
  assert record["experiment"]["model"]["initialization"] == "uniform"
  older = json.loads(json.dumps(record))
  del older["experiment"]["model"]["initialization"]  # Written before the option existed.
  run_dir_lib.write_json(os.path.join(tmp_path, run_dir_lib.CONFIG_FILE), older)
  then = json.loads(json.dumps(record))
  then["experiment"]["model"]["initialization"] = "keras"
  run_dir_lib.claim(str(tmp_path), then)  # The same run.
  with pytest.raises(run_dir_lib.RunDirError,
                     match=r"another configuration .*model.initialization: 'keras' -> 'uniform'"):
    run_dir_lib.claim(str(tmp_path), record)


def test_speed_only_fields_compare_alike_but_a_run_resumes_only_with_its_own(tmp_path):
  """A finished run compares as the same configuration across `SPEED_ONLY_FIELDS` (its table row
  and refit use it), while resuming it still needs the values it was started with."""
  from trainer import run_dir as run_dir_lib  # pylint: disable=import-outside-toplevel
  from trainer.config import SPEED_ONLY_FIELDS, build_config  # pylint: disable=import-outside-toplevel
  record = {"experiment": build_config("gowalla").to_dict(), "dataset": "gowalla"}
  older = json.loads(json.dumps(record))
  del older["experiment"]["train"]["length_multiple"]  # Written before it existed: 0.
  older["experiment"]["train"]["checkpoint_every_steps"] = 7
  assert run_dir_lib.record_differences(older, record) == [
      "train.checkpoint_every_steps: 7 -> 1000", "train.length_multiple: 0 -> 2"]
  assert run_dir_lib.record_differences(older, record, ignore=SPEED_ONLY_FIELDS) == []
  older["experiment"]["model"]["table_dropout"] = 0.0
  assert run_dir_lib.record_differences(older, record, ignore=SPEED_ONLY_FIELDS) == [
      "model.table_dropout: 0.0 -> 0.1"]
  run_dir_lib.write_json(os.path.join(tmp_path, run_dir_lib.CONFIG_FILE), older)
  with pytest.raises(run_dir_lib.RunDirError, match=r"train.length_multiple: 0 -> 2"):
    run_dir_lib.claim(str(tmp_path), record)


def test_read_only_run_folder_fails_before_training(tmp_path, prepared_dir, tmpfs):
  read_only = tmpfs("ro", "1m", read_only=True)
  started = time.time()
  result = run_module("trainer.main", *SMALL, f"--output_dir={prepared_dir}",
                      f"--run_dir={read_only / 'run'}")
  assert result.returncode == 2, result.stderr[-3000:]
  assert f"cannot write into {read_only / 'run'}: Read-only file system" in result.stderr
  assert "Traceback" not in result.stderr and time.time() - started < 60


def fill(directory, leave_bytes=0):
  """Fills the file system of `directory` until `leave_bytes` (or nothing) are free."""
  with open(os.path.join(directory, "filler"), "wb") as out:
    try:
      while True:
        chunk = min(1 << 16, shutil.disk_usage(directory).free - leave_bytes)
        if chunk <= 0:
          break
        out.write(b"\0" * chunk)
        out.flush()
    except OSError:  # ENOSPC: the disk is full
      pass


def test_full_disk_before_training_is_reported_with_the_space_needed(tmp_path, prepared_dir,
                                                                      tmpfs):
  disk = tmpfs("small", "4m")
  fill(disk, leave_bytes=64 << 10)
  result = run_module("trainer.main", *SMALL, f"--output_dir={prepared_dir}",
                      f"--run_dir={disk / 'run'}")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "MiB free but this run (checkpoints, exports) needs about" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (disk / "run" / "checkpoints").exists()


def test_disk_full_during_training_keeps_the_last_checkpoint_and_resumes(
    tmp_path, prepared_dir, uninterrupted_run, tmpfs):
  disk = tmpfs("disk", "8m")
  run = disk / "run"
  process = train_until_checkpoint(run, prepared_dir, 40)
  process.send_signal(signal.SIGSTOP)  # fill the disk between two steps
  fill(disk)
  process.send_signal(signal.SIGCONT)
  output = process.communicate(timeout=300)[0]
  assert process.returncode == 4, output[-3000:]
  assert "could not write checkpoint" in output and "is intact" in output, output[-3000:]
  assert "Traceback" not in output
  assert checkpoint_weights(run / "checkpoints")  # the last good checkpoint still reads
  os.remove(disk / "filler")
  resumed = train(run, prepared_dir, *RESUMABLE)
  assert "Resumed from" in resumed.stderr
  assert_same_final_weights(run, uninterrupted_run)


def test_non_finite_loss_stops_training_naming_the_step(tmp_path, prepared_dir):
  # A scale of 3e38 makes the logits overflow float32: the loss is not finite at the first step.
  args = [*SMALL, f"--output_dir={prepared_dir}", f"--run_dir={tmp_path}", "--scale=3e38"]
  result = run_module("trainer.main", *args)
  assert result.returncode == 3
  assert "training loss is nan at epoch 1, step 1 (global step 1)" in result.stderr
  assert "no checkpoint had been written yet" in result.stderr
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()


def test_refit_trains_every_epoch_on_all_training_sessions(tmp_path, prepared_dir):
  from data.prepared import PreparedDataset
  train(tmp_path, prepared_dir, "--train_on_valid", "--train_order=chronological", "--epochs=2",
        "--patience=1", "--evaluate_test_every_epoch=false")
  result = metrics(tmp_path)
  prepared = PreparedDataset.load(str(prepared_dir / "synthetic"))
  all_training = prepared.num_examples("train") + prepared.num_examples("valid")
  assert result["steps_per_epoch"] == all_training // 64  # the synthetic preset's batch
  assert result["config"]["train"]["train_order"] == "chronological"
  # Nothing held out: no validation metrics, no early stopping, the last epoch is the result,
  # and the test set is evaluated after every epoch.
  assert result["epochs_trained"] == result["selected_epoch"] == 2
  assert result["valid"] is None and all(e["valid"] is None for e in result["epochs"])
  assert all(e["test"] for e in result["epochs"])
  assert result["test"] == result["epochs"][-1]["test"]
  assert "nothing held out" in result["selection"]


# ---------------------------------------------------------------------------------------------
# The full protocol (the default): selection, then refit, resumable across both stages.

FULL = ["--protocol=full", "--epochs=2", "--patience=1", "--checkpoint_every_steps=20"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, prepared_dir):
  run = tmp_path_factory.mktemp("full")
  result = train(run, prepared_dir, *FULL, "--export_indexes=brute_force")
  return run, result


# The project's own modules, by file name (absl's log lines name the file).
OUR_FILES = {os.path.basename(path) for package in ("data", "trainer", "serving", "tfrs_attenmixer")
             for path in glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True)}


def lines_a_user_should_not_see(stderr):
  """Error lines, and log lines of TensorFlow's own (native, or Python records of its modules)."""
  found = []
  for line in stderr.replace("\r", "\n").splitlines():
    python_record = re.match(r"^([IWEF])\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]", line)
    if python_record:
      if python_record.group(1) in "EF" or python_record.group(2) not in OUR_FILES:
        found.append(line)
    elif re.match(r"^(\d{4}-\d\d-\d\d [\d:.]+: [IWEF] |[IWEF]0000 |WARNING: All log)", line):
      found.append(line)  # the C++ runtime's
  return found


def test_full_protocol_refits_for_the_selected_epochs_and_exports_the_refit(
    tmp_path, prepared_dir, full_run):
  run, result = full_run
  selection, refit, summary = (metrics(run / "selection"), metrics(run / "refit"), metrics(run))
  epochs = selection["selected_epoch"]
  assert selection["config"]["train"]["train_on_valid"] is False and selection["valid"]
  assert refit["config"]["train"]["train_on_valid"] is True
  assert refit["config"]["train"]["epochs"] == refit["epochs_trained"] == epochs
  # The run's results are the refit's; the validation estimate is the selection stage's.
  assert summary["test"] == refit["test"] and summary["epochs_trained"] == epochs
  assert summary["valid"] == selection["valid"] == summary["selection"]["valid"]
  assert summary["selection"]["selected_epoch"] == epochs
  assert f"refit on all training sessions for {epochs} epoch(s)" in result.stdout
  # The console: the project's lines and the progress bars only.
  assert not lines_a_user_should_not_see(result.stderr), lines_a_user_should_not_see(
      result.stderr)
  assert "epoch 1/2" in result.stderr and "Stage 2 of 2, refit" in result.stderr
  # Only the refit is exported, with the selection stage's validation metrics.
  from trainer import push
  with open(run / "export" / "attenmixer" / "1" / "assets.extra" / "export.json") as stream:
    exported = json.load(stream)
  assert exported[push.METRICS_KEY] == push.numeric_metrics(selection["valid"])
  assert not (run / "selection" / "export").exists()
  # serving.export on the run folder exports the refit too (not the selection stage), with the
  # same metrics.
  import tensorflow as tf
  embeddings = {}
  for name, folder in (("again", run), ("selection", run / "selection")):
    exported_again = run_module("serving.export", f"--run_dir={folder}", "--novalidate",
                                f"--export_dir={tmp_path / name}")
    assert exported_again.returncode == 0, exported_again.stderr[-3000:]
    loaded = tf.saved_model.load(str(tmp_path / name / "attenmixer" / "1"))
    embeddings[name] = loaded.signatures["session_embedding"](
        sessions=tf.constant([[3, 4, 5], [7, 0, 0]], tf.int64))
  trained = tf.saved_model.load(str(run / "export" / "attenmixer" / "1"))
  expected = trained.signatures["session_embedding"](sessions=tf.constant([[3, 4, 5], [7, 0, 0]],
                                                                          tf.int64))
  for key, value in expected.items():
    np.testing.assert_array_equal(embeddings["again"][key].numpy(), value.numpy())
    assert np.abs(embeddings["selection"][key].numpy() - value.numpy()).max() > 1e-3
  with open(tmp_path / "again" / "attenmixer" / "1" / "assets.extra" / "export.json") as stream:
    assert json.load(stream)[push.METRICS_KEY] == exported[push.METRICS_KEY]
  # That the refit is the run a fresh process trains from the selection's result alone:
  # test_refit_from_a_committed_selection_result_alone.


def test_full_protocol_killed_in_the_refit_resumes_it_without_the_selection(
    tmp_path, prepared_dir, full_run):
  reference, _ = full_run
  run = tmp_path / "killed"
  process = train(run, prepared_dir, *FULL, background=True)
  deadline = time.time() + 400
  while not latest_checkpoint_is(run / "refit" / "checkpoints", 40):
    assert process.poll() is None and time.time() < deadline, process.stdout.read()[-3000:]
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  resumed = train(run, prepared_dir, *FULL)
  assert "Selection stage finished" in resumed.stderr and "not trained again" in resumed.stderr
  assert "Resumed from" in resumed.stderr and "epoch 0, step 40 of " in resumed.stderr
  assert_same_final_weights(run / "refit", reference / "refit")
  assert metrics(run)["test"] == metrics(reference)["test"]


def test_a_data_package_in_the_working_folder_is_harmless(tmp_path, full_run):
  """Our top-level packages have common names: a user's own `data/` (first on `sys.path` under
  `python -m`) must not replace ours in the trainer or the export."""
  run, _ = full_run
  user = tmp_path / "user"
  (user / "data").mkdir(parents=True)
  for name in ("__init__.py", "flags.py", "prepared.py"):
    (user / "data" / name).write_text("raise RuntimeError('the user\\'s own data package')\n")
  printed = run_module("trainer.main", "--dataset=gowalla", "--print_config", cwd=user)
  assert printed.returncode == 0, printed.stderr[-3000:]
  assert json.loads(printed.stdout.splitlines()[-1])["dataset"] == "gowalla"
  exported = run_module("serving.export", f"--run_dir={run}", f"--export_dir={user / 'out'}",
                        "--novalidate", cwd=user)
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert (user / "out" / "attenmixer" / "1" / "saved_model.pb").is_file()


def test_a_dataset_folder_of_your_own_trains_and_exports(tmp_path, prepared_dir):
  """Any `<data_dir>/<name>/` with the two documented files, no code change (issue 28.1)."""
  import gzip
  rng = np.random.default_rng(3)
  own = tmp_path / "data" / "myshop"
  own.mkdir(parents=True)
  for name, count in (("train_sessions.txt.gz", 600), ("test_sessions.txt.gz", 100)):
    with gzip.open(own / name, "wt") as out:
      for _ in range(count):
        out.write(" ".join(str(i) for i in rng.integers(1, 60, size=rng.integers(2, 6))) + "\n")
  result = run_module("trainer.main", "--dataset=myshop", f"--data_dir={tmp_path / 'data'}",
                      f"--output_dir={tmp_path / 'prepared'}", f"--run_dir={tmp_path / 'run'}",
                      "--protocol=selection", "--epochs=1", "--embedding_dim=16", "--num_heads=2",
                      "--batch_size=32", "--export_indexes=brute_force")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Dataset myshop is not registered" in result.stderr
  assert (tmp_path / "prepared" / "myshop" / "stats.json").is_file()
  assert (tmp_path / "run" / "export" / "attenmixer" / "1" / "saved_model.pb").is_file()
  assert metrics(tmp_path / "run")["dataset"] == "myshop"


def test_an_index_below_its_recall_target_fails_the_export_and_keeps_the_model(
    tmp_path, prepared_dir):
  """Issue 29.1: no portable_ann search cheaper than brute force finds every one of the exact
  top-20 of every validation example (--min_recall=1): exit 2 naming the best recall, nothing
  published and no metrics.json; a rerun with a reachable target exports the trained model
  without training it again."""
  run = tmp_path / "run"
  missed = run_module("trainer.main", *SMALL, f"--output_dir={prepared_dir}",
                      f"--run_dir={run}", "--epochs=1", "--max_steps_per_epoch=10",
                      "--export_indexes=portable_ann", "--min_recall=1")
  assert missed.returncode == 2, missed.stderr[-3000:]
  assert "no portable_ann search setting reaches recall@20 >= 1.0 on " in missed.stderr
  assert "the best reached 0." in missed.stderr and "nothing was published" in missed.stderr
  assert f"The trained model is intact in {run}" in missed.stderr
  assert not (run / "export" / "attenmixer_portable_ann").exists()
  assert not (run / "metrics.json").exists()
  again = train(run, prepared_dir, "--epochs=1", "--max_steps_per_epoch=10",
                "--export_indexes=portable_ann", "--min_recall=0")
  assert "Resumed from" in again.stderr, again.stderr[-3000:]
  assert len(metrics(run)["epochs"]) == 1
  with open(run / "export" / "attenmixer_portable_ann" / "1" / "assets.extra" /
            "export.json") as record:
    recall = json.load(record)["index_recall"]
  assert recall["min_recall"] == 0 and recall["split"] == "valid" and recall["reached"]


def test_refit_from_a_committed_selection_result_alone(tmp_path, prepared_dir, full_run):
  reference, _ = full_run
  committed = tmp_path / "results"
  committed.mkdir()
  for name in ("metrics.json", "config.json"):  # what results/ keeps of a stage
    shutil.copy(reference / "selection" / name, committed / name)
  run = tmp_path / "fresh"
  result = train(run, prepared_dir, *FULL, f"--selection_from={committed}")
  assert "Stage 1 of 2" not in result.stderr and not (run / "selection").exists()
  assert_same_final_weights(run / "refit", reference / "refit")
  assert metrics(run)["selection"]["folder"] == str(committed)
  # Another configuration, or a folder that is not a selection stage: refused, nothing written.
  for flags, message in (([f"--selection_from={committed}", "--embedding_dim=16"],
                          "model.embedding_dim: 32 -> 16"),
                         ([f"--selection_from={reference / 'refit'}"], "another configuration")):
    refused = run_module("trainer.main", *SMALL, *FULL, f"--output_dir={prepared_dir}",
                         f"--run_dir={tmp_path / 'refused'}", *flags)
    assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-2000:]
    assert not (tmp_path / "refused").exists()
