"""Launching `python -m trainer.main` from a benchmark: its log teed, its artefacts copied.

Shared by `benchmarks.full_run` (one run) and `benchmarks.reproduce` (the rows of a paper table).
"""

import functools
import json
import os
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import logging

from trainer import run_dir as run_dir_lib
from trainer.config import SPEED_ONLY_FIELDS

CONFIG_ERROR = 2  # `trainer.main`'s exit code for a configuration error
# Beside a copy of a run's artefacts: Figure 7's test metrics by session length, derived from the
# run's weights (which a fresh checkout does not have); removed when the copy's metrics are replaced.
SESSION_LENGTH_FILE = "session_length_test.json"


def full_run_dir(runs_dir: str, dataset: str, variant: str) -> str:
  """The run folder of `benchmarks.full_run` (the log is this path plus `.log`), holding the
  trainer's stage folders (`trainer.run_dir.stage_dirs`)."""
  return os.path.join(runs_dir, f"{dataset}-{variant}-full")


def refit_dir(run_dir: str) -> str:
  """The folder of the refit of the selection stage in `run_dir`: its sibling stage folder in a
  full-protocol run folder, else `<run_dir>-refit`."""
  parent, name = os.path.split(os.path.normpath(run_dir))
  if name == run_dir_lib.SELECTION_STAGE:
    return os.path.join(parent, run_dir_lib.REFIT_STAGE)
  return run_dir + "-refit"


def stage_name(run_dir: str) -> str:
  """A stage's name in results/: its folder's name, or for a stage folder of a full-protocol run
  folder `R`, `R`'s name (the selection stage) or that plus `-refit`."""
  parent, name = os.path.split(os.path.normpath(run_dir))
  if name == run_dir_lib.SELECTION_STAGE:
    return os.path.basename(parent)
  if name == run_dir_lib.REFIT_STAGE:
    return os.path.basename(parent) + "-refit"
  return name


def refit_args(selection_args: Sequence[str], epochs: int) -> List[str]:
  """The trainer flags of the refit of a selection run (`selection_args`, with its `--run_dir`):
  the same configuration on all training sessions, for the selected `epochs`, in `refit_dir`."""
  args = [f"--run_dir={refit_dir(arg.split('=', 1)[1])}" if arg.startswith("--run_dir=") else arg
          for arg in selection_args]
  return [*args, "--train_on_valid", f"--epochs={epochs}"]


def selected_epoch(run_dir: str) -> int:
  """The epoch a finished run selected on validation (its metrics.json)."""
  with open(os.path.join(run_dir, run_dir_lib.METRICS_FILE)) as metrics:
    return json.load(metrics)["selected_epoch"]


def is_finished(run_dir: str) -> bool:
  """Whether the run in `run_dir` (or the copy of its artefacts) has its final metrics."""
  return os.path.isfile(os.path.join(run_dir, run_dir_lib.METRICS_FILE))


def finished_folder(run_dir: str, destination: str) -> Optional[str]:
  """The folder holding a run's final metrics: its run folder, else the copy of its artefacts in
  `destination` (a fresh checkout: run folders are not committed, copies are); None if neither.

  Whether that run is the one a command trains today is `configuration_changes`' question.
  """
  return next((folder for folder in (run_dir, destination) if is_finished(folder)), None)


def run_record(args: Sequence[str]) -> Dict[str, Any]:
  """The record (`{"experiment", "dataset"}`) that `python -m trainer.main args` trains today,
  with the current defaults (`--print_config`)."""
  return json.loads(_printed_config(tuple(args)))


@functools.lru_cache(maxsize=None)
def _printed_config(args: Tuple[str, ...]) -> str:
  """`python -m trainer.main args --print_config`'s JSON line, once per process and command (a
  finished run is checked when trained and again when its table is written)."""
  result = subprocess.run([sys.executable, "-m", "trainer.main", *args, "--print_config"],
                          capture_output=True, text=True, check=False)
  if result.returncode:
    raise ValueError(f"python -m trainer.main {' '.join(args)}: {result.stderr.strip()}")
  return result.stdout.strip().splitlines()[-1]


def configuration_changes(folder: str, args: Sequence[str]) -> List[str]:
  """How the run recorded in `folder` (a run folder, or the copy of its artefacts) differs from
  the one `args` train today: empty when it is that run. A finished run trained before a default
  changed differs in that field, unless the field only changes the speed
  (`trainer.config.SPEED_ONLY_FIELDS`)."""
  return run_dir_lib.record_differences(run_dir_lib.read_config(folder), run_record(args),
                                        ignore=SPEED_ONLY_FIELDS)


def report_configuration_changes(folder: str, differences: Sequence[str]) -> int:
  """Logs that `folder` holds a run of another configuration; returns the trainer's exit code for
  a configuration error."""
  logging.error("%s holds a finished run of another configuration (%s), for example one trained "
                "under an earlier default; move it aside to train this one", folder,
                "; ".join(differences))
  return CONFIG_ERROR


def recorded_command(destination: str) -> Optional[str]:
  """The command recorded beside a finished run's artefacts in `destination`, if any."""
  command_path = os.path.join(destination, "command.txt")
  if not (is_finished(destination) and os.path.isfile(command_path)):
    return None
  with open(command_path) as recorded:
    return recorded.read().strip()


def train_and_copy(args: Sequence[str], run_dir: str, destination: str, command: str,
                   train: bool = True) -> int:
  """Trains `python -m trainer.main args` in `run_dir` unless it is finished, then copies its
  artefacts to `destination` with `command` (the command line that produced them).

  A run is finished when `run_dir` has its metrics or, in a fresh checkout whose run folders are
  gone, when `destination` holds them; either only if that run has the configuration `args`
  train today (not one from before a default changed: that is reported, and nothing is trained
  or overwritten). Artefacts already in `destination` from another command are kept, with a
  warning. With `train=False` an unfinished run is only reported.

  Returns:
    The trainer's exit code (0 when the run is finished or was not to be trained).
  """
  name = os.path.basename(run_dir)
  log_path = run_dir + ".log"
  folder = finished_folder(run_dir, destination)
  if folder is not None:
    differences = configuration_changes(folder, args)
    if differences:
      return report_configuration_changes(folder, differences)
    if folder == destination:
      logging.info("skipped %s: finished (%s is absent; %s holds its results)", name, run_dir,
                   destination)
      return 0
    logging.info("skipped %s: finished (%s has %s)", name, run_dir, run_dir_lib.METRICS_FILE)
  elif not train:
    logging.info("not trained: %s", name)
    return 0
  else:
    logging.info("running %s: %s", name, command)
    code = run_trainer(args, log_path)
    if code:
      logging.error("%s failed (exit code %d); see %s. Rerun to resume it.", name, code, log_path)
      return code
  recorded = recorded_command(destination)
  if recorded is not None and recorded != command:
    logging.warning("%s holds artefacts of another command (%s), not `%s`; kept. Remove %s and "
                    "%s to train it again", destination, recorded, command, run_dir, destination)
    return 0
  copy_artefacts(run_dir, log_path, destination, command)
  logging.info("artefacts of %s copied to %s", run_dir, destination)
  return 0


def full_protocol_and_copy(args: Sequence[str], run_dir: str, destination: str,
                           command: str) -> int:
  """Runs `python -m trainer.main args` (the full protocol, `--run_dir=run_dir`) unless both
  stages are finished, then copies the selection stage's artefacts to `destination` and the
  refit's to `destination/refit`, each with `command`.

  A stage is finished when its stage folder has its metrics or, in a fresh checkout, when its
  copy in `destination` has them; either only with the configuration `args` train today (one
  from before a default changed is reported; nothing is trained or overwritten). A selection
  stage found only in `destination` is passed to the trainer as `--selection_from`.

  Returns:
    The trainer's exit code (0 when both stages are finished).
  """
  selection_run, refit_run = run_dir_lib.stage_dirs(run_dir)
  refit_copy = os.path.join(destination, "refit")
  selection = finished_folder(selection_run, destination)
  if selection is not None:
    differences = configuration_changes(selection, args)
    if differences:
      return report_configuration_changes(selection, differences)
  extra = []
  if selection == destination:
    logging.info("selection stage: %s is absent; refitting from %s", selection_run, destination)
    extra = [f"--selection_from={destination}"]
  refit = finished_folder(refit_run, refit_copy)
  if refit is not None and selection is not None:
    refit_args_now = [*args, "--protocol=selection", "--train_on_valid",
                      f"--epochs={selected_epoch(selection)}"]
    differences = configuration_changes(refit, refit_args_now)
    if differences:
      return report_configuration_changes(refit, differences)
  if refit is not None:
    logging.info("skipped %s: both stages finished (%s has the refit's %s)", run_dir, refit,
                 run_dir_lib.METRICS_FILE)
  else:
    logging.info("running %s: %s", os.path.basename(run_dir), command)
    code = run_trainer([*args, *extra], run_dir + ".log")
    if code:
      logging.error("%s failed (exit code %d); see %s.log. Rerun to resume it.", run_dir, code,
                    run_dir)
      return code
  for stage, copy in ((selection_run, destination), (refit_run, refit_copy)):
    if not is_finished(stage):
      continue  # a fresh checkout: the stage's results are its copy
    recorded = recorded_command(copy)
    if recorded is not None and recorded != command:
      logging.warning("%s holds artefacts of another command (%s), not `%s`; kept", copy,
                      recorded, command)
      continue
    copy_artefacts(stage, run_dir + ".log", copy, command)
    logging.info("artefacts of %s copied to %s", stage, copy)
  return 0


def run_trainer(args: Sequence[str], log_path: str) -> int:
  """Runs `python -m trainer.main args`, echoing its output and appending it to `log_path`.

  The trainer resumes from its checkpoints when rerun with the same `--run_dir` and flags, so the
  log of an interrupted run keeps every attempt.

  Returns:
    The trainer's exit code.
  """
  os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  with open(log_path, "a") as log:
    process = subprocess.Popen([sys.executable, "-m", "trainer.main", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # flushed line by line, so that `tail -f` on the log is current
      sys.stdout.write(line)
      sys.stdout.flush()
      log.write(line)
      log.flush()
    return process.wait()


def copy_artefacts(run_dir: str, log_path: str, destination: str, command: str) -> None:
  """Copies a finished run's metrics.json, config.json and log to `destination`, removing what
  was derived from the run there before (`SESSION_LENGTH_FILE`).

  `command.txt` beside them holds `command`, the command line that produced the run.
  """
  os.makedirs(destination, exist_ok=True)
  derived = os.path.join(destination, SESSION_LENGTH_FILE)
  if os.path.isfile(derived):
    os.remove(derived)
  for source in (os.path.join(run_dir, run_dir_lib.METRICS_FILE),
                 os.path.join(run_dir, run_dir_lib.CONFIG_FILE), log_path):
    shutil.copy(source, os.path.join(destination, os.path.basename(source)))
  with open(os.path.join(destination, "command.txt"), "w") as out:
    out.write(command + "\n")
