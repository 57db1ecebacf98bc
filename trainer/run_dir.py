"""The layout of a run folder, and how to rebuild a trained model from one.

One stage (`trainer.main --protocol=selection`):

    <run_dir>/config.json        the effective configuration and the prepared dataset's folder
    <run_dir>/checkpoints/       training checkpoints (model, optimizer, epoch, step, history)
    <run_dir>/best/              the weights of the selected epoch (checkpoint key "model")
    <run_dir>/tensorboard/       TensorBoard logs
    <run_dir>/metrics.json       results (see trainer/README.md)
    <run_dir>/export/<name>/<version>/   the servable SavedModel (trainer.export)

The full protocol (the default): one such stage folder per stage, the results and exports of
the run (the refit's) at the top:

    <run_dir>/selection/         the selection stage (as above, without export/)
    <run_dir>/refit/             the refit on all training sessions (as above, without export/)
    <run_dir>/metrics.json       the refit's results, with the selection stage's (`selection`)
    <run_dir>/export/<name>/<version>/
"""

import json
import os
import re
import shutil
import tempfile
from typing import Any, Dict, List, Sequence, Tuple

from data.atomic import atomic_output

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
BEST_DIR = "best"
CHECKPOINT_DIR = "checkpoints"
SELECTION_STAGE = "selection"
REFIT_STAGE = "refit"


def stage_dirs(run_dir: str) -> Tuple[str, str]:
  """The selection and refit stage folders of a full-protocol run folder."""
  return os.path.join(run_dir, SELECTION_STAGE), os.path.join(run_dir, REFIT_STAGE)


def model_dir(run_dir: str) -> str:
  """The stage folder holding a run's model: the refit's of a full-protocol run folder, else
  `run_dir` itself."""
  refit = stage_dirs(run_dir)[1]
  if (not os.path.isfile(os.path.join(run_dir, CONFIG_FILE)) and
      os.path.isfile(os.path.join(refit, CONFIG_FILE))):
    return refit
  return run_dir


class RunDirError(ValueError):
  """A run folder is unusable: the message names the folder and what to do."""


def check_writable(directory: str) -> None:
  """Creates `directory` if needed and proves a file can be written, synced and removed there.

  Raises:
    RunDirError: naming the folder and the system's reason (read-only file system, no space,
      permission denied).
  """
  try:
    os.makedirs(directory, exist_ok=True)
    handle, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe-")
    try:
      os.write(handle, b"probe")
      os.fsync(handle)
    finally:
      os.close(handle)
      os.remove(probe)
  except OSError as error:
    raise RunDirError(f"cannot write into {directory}: {error.strerror or error}; choose a "
                      "writable folder (--run_dir / --export_dir)") from error


def check_free_space(directory: str, needed_bytes: int, what: str) -> None:
  """Raises `RunDirError` when the file system of `directory` has less than `needed_bytes` free."""
  free = shutil.disk_usage(directory).free
  if free < needed_bytes:
    raise RunDirError(f"{directory} has {free / 2**20:.1f} MiB free but {what} needs about "
                      f"{needed_bytes / 2**20:.1f} MiB; free some space or choose another "
                      "folder")


def write_error_reason(error: BaseException) -> str:
  """The system's reason for a failed write, without TensorFlow's op and function decorations."""
  reason = getattr(error, "message", None) or str(error)
  reason = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", reason)
  return re.sub(r"\s*\[Op:\w+\]", "", reason).strip()


def write_json(path: str, content: Dict[str, Any]) -> None:
  """Writes JSON atomically (temporary file, then rename)."""
  with atomic_output(path) as temporary:
    with open(temporary, "w") as out:
      json.dump(content, out, indent=1, sort_keys=True)


def read_config(run_dir: str) -> Dict[str, Any]:
  path = os.path.join(run_dir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise RunDirError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); train with "
                      "`python -m trainer.main --run_dir=...` first")
  with open(path) as config_file:
    return json.load(config_file)


def record_differences(stored: Dict[str, Any], record: Dict[str, Any],
                       ignore: Sequence[str] = ()) -> List[str]:
  """How two run records (`{"experiment", "dataset", ...}`) differ, one "field: a -> b" each.

  They are compared as configurations: a field missing from `stored` (written before the field
  existed) takes the value the code had then (`trainer.config.VALUES_BEFORE_FIELD`). Fields named
  in `ignore` ("part.name", e.g. `trainer.config.SPEED_ONLY_FIELDS`) are left out.
  """
  from trainer.config import ExperimentConfig  # pylint: disable=g-import-not-at-top

  def fields(run: Dict[str, Any]) -> Dict[str, Any]:
    experiment = ExperimentConfig.from_dict(run["experiment"]).to_dict()
    return {"dataset": run["dataset"],
            **{f"{part}.{name}": value for part, values in experiment.items()
               for name, value in values.items()}}

  before, after = fields(stored), fields(record)
  return [f"{name}: {before[name]!r} -> {after[name]!r}" for name in sorted(before)
          if before[name] != after[name] and name not in ignore]


def check_same_run(run_dir: str, record: Dict[str, Any], what: str = "a run") -> None:
  """Raises `RunDirError` if `run_dir`'s `config.json` describes another run than `record`
  (naming the fields that differ); `what` names the run in the message."""
  differences = record_differences(read_config(run_dir), record)
  if differences:
    raise RunDirError(
        f"{run_dir} holds {what} of another configuration ({os.path.join(run_dir, CONFIG_FILE)}; "
        f"{'; '.join(differences)}); resume it with the same flags, or pass another --run_dir")


def claim(run_dir: str, record: Dict[str, Any]) -> None:
  """Writes `config.json`, or checks that an existing one describes the same run (resumption)."""
  if os.path.isfile(os.path.join(run_dir, CONFIG_FILE)):
    check_same_run(run_dir, record)
    return
  write_json(os.path.join(run_dir, CONFIG_FILE), record)


def load_trained_model(run_dir: str):
  """Rebuilds the model of a run with the weights of its selected epoch (of a full-protocol run
  folder: the refit's; see `model_dir`).

  Returns:
    `(model, prepared, config)`: the `SessionRetrievalModel`, its `PreparedDataset` and the run's
    `ExperimentConfig`.
  """
  # pylint: disable=g-import-not-at-top  (TensorFlow only when a model is needed)
  import tensorflow as tf
  from data.prepared import PreparedDataset
  from tfrs_attenmixer.model import SessionRetrievalModel
  from trainer.config import ExperimentConfig
  run_dir = model_dir(run_dir)
  record = read_config(run_dir)
  config = ExperimentConfig.from_dict(record["experiment"])
  prepared = PreparedDataset.load(record["prepared_dir"], verify=False)
  model = SessionRetrievalModel(config.model, prepared.num_items)
  model.create_weights(config.train.max_length)  # restored below
  latest = tf.train.latest_checkpoint(os.path.join(run_dir, BEST_DIR))
  if not latest:
    raise RunDirError(f"{run_dir}/{BEST_DIR} holds no checkpoint: the run has not finished an "
                      "epoch yet")
  tf.train.Checkpoint(model=model).restore(latest).expect_partial()
  return model, prepared, config
