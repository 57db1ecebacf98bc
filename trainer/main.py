r"""Trains Atten-Mixer (or a baseline of the paper) on a session dataset, evaluates it, exports it.

    python -m trainer.main --dataset=gowalla [--protocol=full|selection]

prepares the dataset if needed (`data.prepare`, reused when already prepared) and trains with the
paper's protocol (per-dataset preset; every option can be overridden by a flag, see --help) in two
stages, each in its own folder of the run folder:

1. `<run_dir>/selection/`: trains on the training split and selects the epoch with the best
   validation MRR@20 (validation: the newest 10% of the training sessions; early stopping).
2. `<run_dir>/refit/`: trains the same configuration on all training sessions for the selected
   number of epochs. Its test metrics are reported beside the paper's and it is exported as a
   servable SavedModel (`<run_dir>/export/`); `<run_dir>/metrics.json` holds its results with the
   selection stage's (`selection`).

Re-running the same command resumes an interrupted run in either stage (a finished selection
stage is not trained again). `--selection_from=DIR` refits from a finished selection stage's
`metrics.json` and `config.json` (e.g. committed results) without training it.
`--protocol=selection` trains, reports and exports the first stage alone, in `<run_dir>` itself.

Distributed: `--strategy=multi_worker` with `TF_CONFIG` set in every worker (see trainer/k8s/).
"""

import dataclasses
import json
import os
import resource
import sys
import time
from typing import Any, Dict, Optional

from absl import app
from absl import flags
from absl import logging

from data import flags as data_flags
from data import registry
from data.errors import DataFormatError, DatasetNotFoundError
from data.prepare import prepare
from trainer import flags as trainer_flags
from trainer import paper
from trainer import run_dir as run_dir_lib
from trainer import cluster
from trainer import export_options
from trainer.config import SPEED_ONLY_FIELDS
from trainer.export_errors import RecallTargetMissed
from tfrs_attenmixer import console

FLAGS = flags.FLAGS

flags.DEFINE_list("export_indexes", ["brute_force", "scann"],
                  "Top-K indexes to export at the end of training, each as its own servable "
                  "model: brute_force -> <export_dir>/attenmixer, others -> "
                  "<export_dir>/attenmixer_<index>; portable_ann (approximate, stock TF ops) on "
                  "request. Empty: no export.")

export_options.define_min_recall_flag("the validation split; the test split for the refit")

EXIT_CONFIG_ERROR = 2
EXIT_TRAINING_FAILED = 3
EXIT_WRITE_FAILED = 4
# An export holds the item table about three times (variables, index, candidate copy).
EXPORT_COPIES_OF_WEIGHTS = 3


def _fail(message: str, code: int) -> int:
  print(f"error: {message}", file=sys.stderr)
  return code


def run_record(config) -> Dict[str, Any]:
  """What decides a run: its `ExperimentConfig` (as a dict) and dataset (see `run_dir.claim`)."""
  return {"experiment": config.to_dict(), "dataset": FLAGS.dataset}


def check_space(trainer, run_dir: str, export_dir: Optional[str]) -> None:
  """Fails before training when the run or export folder (None: no export) cannot hold what the
  run will write.

  Needed: two training checkpoints (the next one is written before the previous is deleted), the
  selected epoch's weights, and each export.
  """
  weights = trainer.weights_bytes()
  indexes = len(FLAGS.export_indexes) if export_dir else 0
  exports = EXPORT_COPIES_OF_WEIGHTS * weights * indexes
  run_needs = 2 * trainer.checkpoint_bytes() + weights
  if indexes and os.stat(run_dir).st_dev != os.stat(export_dir).st_dev:
    run_dir_lib.check_free_space(run_dir, run_needs, "this run's checkpoints")
    run_dir_lib.check_free_space(export_dir, exports, "this run's exports")
  else:
    run_dir_lib.check_free_space(run_dir, run_needs + exports, "this run (checkpoints, exports)")


class StageFailed(Exception):
  """A stage ended with an error already reported; `code` is the process's exit code."""

  def __init__(self, code: int):
    super().__init__(code)
    self.code = code


def refit_config(config, selected_epoch: int):
  """The refit stage's configuration: `config` trained on all training sessions (nothing held
  out) for `selected_epoch` epochs."""
  train = dataclasses.replace(config.train, train_on_valid=True, epochs=selected_epoch)
  return dataclasses.replace(config, train=train)


def read_selection(folder: str, config) -> Dict[str, Any]:
  """The metrics of the finished selection stage in `folder` (`--selection_from`).

  Raises:
    ValueError: `folder` lacks metrics.json or config.json, or holds a run of another
      configuration than `config` (or another dataset) trains.
  """
  metrics_path = os.path.join(folder, run_dir_lib.METRICS_FILE)
  if not os.path.isfile(metrics_path):
    raise ValueError(f"--selection_from={folder}: no {run_dir_lib.METRICS_FILE} (not a finished "
                     "selection stage)")
  try:
    stored = run_dir_lib.read_config(folder)
  except run_dir_lib.RunDirError as error:
    raise ValueError(f"--selection_from: {error}") from error
  differences = run_dir_lib.record_differences(stored, run_record(config),
                                               ignore=SPEED_ONLY_FIELDS)
  if differences:
    raise ValueError(f"--selection_from={folder} holds a selection stage of another "
                     f"configuration ({'; '.join(differences)}); pass the same flags as that run")
  with open(metrics_path) as stream:
    metrics = json.load(stream)
  if metrics.get("selected_epoch") is None or not metrics.get("valid"):
    raise ValueError(f"--selection_from={metrics_path}: no selected epoch with validation metrics "
                     "(a refit's or a --train_on_valid run's folder, not a selection stage)")
  return metrics


def train_stage(config, prepared, stage_dir: str, strategy, task, export_dir: Optional[str],
                export_metrics: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
  """Trains (or resumes) one stage in `stage_dir`; on the chief, writes and returns its summary.

  Args:
    export_dir: where every `--export_indexes` model is exported after training (None: none).
    export_metrics: the validation metrics recorded with the exports (default: the stage's).

  Returns:
    The stage's summary (its `metrics.json`) on the chief; on other workers only
    `{"selected_epoch": ...}` (the history, hence the selection, is the same on every worker).

  Raises:
    StageFailed: an error was reported; its code is the process's exit code.
  """
  # pylint: disable=g-import-not-at-top  (TensorFlow after the configuration checks)
  import tensorflow as tf
  from trainer.training import NonFiniteLossError, OutputWriteError, Trainer
  record = {**run_record(config), "variant": FLAGS.variant,
            "prepared_dir": os.path.abspath(prepared.directory)}
  try:
    if task.is_chief:
      run_dir_lib.check_writable(stage_dir)
      if export_dir:
        run_dir_lib.check_writable(export_dir)
      run_dir_lib.claim(stage_dir, record)
  except run_dir_lib.RunDirError as error:
    raise StageFailed(_fail(str(error), EXIT_CONFIG_ERROR)) from error

  logging.info("Training %s on %s (%d items) with %d replica(s); run folder %s", FLAGS.variant,
               FLAGS.dataset, prepared.num_items, strategy.num_replicas_in_sync, stage_dir)
  started = time.time()
  trainer = Trainer(config, prepared, stage_dir, strategy, task)
  try:
    if task.is_chief:
      check_space(trainer, stage_dir, export_dir)
    trainer.train()
  except run_dir_lib.RunDirError as error:
    raise StageFailed(_fail(str(error), EXIT_CONFIG_ERROR)) from error
  except NonFiniteLossError as error:
    raise StageFailed(_fail(str(error), EXIT_TRAINING_FAILED)) from error
  except OutputWriteError as error:
    raise StageFailed(_fail(str(error), EXIT_WRITE_FAILED)) from error
  logging.info("Weights fingerprint: %s", trainer.weights_fingerprint())
  if not task.is_chief:
    return {"selected_epoch": trainer.selected_epoch()}

  trainer.restore_best()
  summary = trainer.summary()
  summary.update({"dataset": FLAGS.dataset, "variant": FLAGS.variant, "config": config.to_dict(),
                  "dataset_stats": prepared.stats(), "wall_seconds": time.time() - started,
                  # Linux reports kilobytes; this invocation only (a resumed run's earlier ones
                  # are not counted).
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "steps_per_epoch": trainer.steps_per_epoch,
                  "replicas": strategy.num_replicas_in_sync,
                  "published": paper.published(FLAGS.dataset, FLAGS.variant)})
  try:
    if export_dir and FLAGS.export_indexes:
      from trainer.export import export_model  # pylint: disable=g-import-not-at-top  (imports TF)
      summary["exports"] = {
          index: export_model(trainer.model, prepared, export_dir, model_name=None,
                              index=index, max_length=config.train.max_length,
                              metrics=export_metrics or summary["valid"],
                              min_recall=FLAGS.min_recall,
                              recall_split="test" if config.train.train_on_valid else "valid")
          for index in FLAGS.export_indexes}
    run_dir_lib.write_json(os.path.join(stage_dir, run_dir_lib.METRICS_FILE), summary)
  except RecallTargetMissed as error:
    raise StageFailed(_fail(
        f"{error}. The trained model is intact in {stage_dir}: rerun with another --min_recall "
        "or --export_indexes to export it", EXIT_CONFIG_ERROR)) from error
  except (OSError, tf.errors.OpError) as error:
    raise StageFailed(_fail(
        f"could not write the results ({run_dir_lib.write_error_reason(error)}); the training "
        f"checkpoints in {stage_dir} are intact: free space, then rerun the same command to "
        "export again", EXIT_WRITE_FAILED)) from error
  return summary


def _finished_summary(stage_dir: str) -> Optional[Dict[str, Any]]:
  path = os.path.join(stage_dir, run_dir_lib.METRICS_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as stream:
    return json.load(stream)


def full_protocol(config, prepared, run_dir: str, export_dir: str, strategy, task,
                  selection_from: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
  """Selection, then refit, in `run_dir/selection` and `run_dir/refit` (see the module's doc).

  Returns:
    The run's summary (`run_dir/metrics.json`: the refit's, with `selection`) on the chief; on
    other workers, the refit's selected epoch only.

  Raises:
    StageFailed: a stage failed.
  """
  selection_dir, refit_dir = run_dir_lib.stage_dirs(run_dir)
  if selection_from is not None:
    selection = selection_from
    logging.info("Selection stage from %s: epoch %d selected on validation", FLAGS.selection_from,
                 selection["selected_epoch"])
  else:
    selection = _finished_summary(selection_dir)
    if selection is not None:
      try:
        run_dir_lib.check_same_run(selection_dir, run_record(config),
                                   "a finished selection stage")
      except run_dir_lib.RunDirError as error:
        raise StageFailed(_fail(str(error), EXIT_CONFIG_ERROR)) from error
      logging.info("Selection stage finished (%s): epoch %d selected; not trained again",
                   selection_dir, selection["selected_epoch"])
    else:
      logging.info("Stage 1 of 2, selection: the epoch is selected on validation")
      selection = train_stage(config, prepared, selection_dir, strategy, task, export_dir=None)
  epochs = selection["selected_epoch"]
  logging.info("Stage 2 of 2, refit: %d epoch(s) on all training sessions", epochs)
  refit = train_stage(refit_config(config, epochs), prepared, refit_dir,
                      strategy, task, export_dir=export_dir, export_metrics=selection.get("valid"))
  if not task.is_chief:
    return refit
  summary = {**refit, "protocol": "full",
             # The refit holds nothing out: the configuration's validation estimate is the
             # selection stage's, at the selected epoch.
             "valid": selection["valid"],
             "selection": {"folder": os.path.abspath(FLAGS.selection_from or selection_dir),
                           "selected_epoch": epochs,
                           "epochs_trained": selection["epochs_trained"],
                           "valid": selection["valid"], "test": selection["test"]}}
  try:
    run_dir_lib.write_json(os.path.join(run_dir, run_dir_lib.METRICS_FILE), summary)
  except OSError as error:
    raise StageFailed(_fail(f"could not write {run_dir}/{run_dir_lib.METRICS_FILE} "
                            f"({run_dir_lib.write_error_reason(error)})",
                            EXIT_WRITE_FAILED)) from error
  return summary


def main(argv) -> int:
  if len(argv) > 1:
    return _fail(f"unexpected arguments {argv[1:]}; all options are --flags (see --help)",
                 EXIT_CONFIG_ERROR)
  # 1. Everything that can be checked without data or TensorFlow's runtime, first.
  try:
    config = trainer_flags.config_from_flags()
    task = cluster.read_tf_config(config.train.strategy)
    unknown = set(FLAGS.export_indexes) - {"brute_force", "scann", "portable_ann"}
    if unknown:
      raise ValueError(f"--export_indexes: unknown index {sorted(unknown)}; choose from "
                       "brute_force, scann, portable_ann")
    if FLAGS.protocol == "full" and config.train.train_on_valid:
      raise ValueError("--train_on_valid trains one stage on all training sessions: pass "
                       "--protocol=selection with it (--protocol=full refits by itself)")
    if FLAGS.selection_from and FLAGS.protocol != "full":
      raise ValueError("--selection_from is the full protocol's: drop --protocol=selection")
    selection_from = (read_selection(FLAGS.selection_from, config) if FLAGS.selection_from
                      else None)
  except ValueError as error:
    return _fail(str(error), EXIT_CONFIG_ERROR)
  if FLAGS.print_config:
    print(json.dumps(run_record(config), sort_keys=True))
    return 0
  # Logical devices must be configured before TensorFlow's runtime starts; TensorFlow is first
  # imported inside `start_tensorflow`.
  def split_cpu():
    from trainer import strategy  # pylint: disable=g-import-not-at-top  (imports TF)
    strategy.split_cpu(config.train.num_cpu_devices)

  console.start_tensorflow(split_cpu, compile_first=False)
  from trainer import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  run_dir = FLAGS.run_dir or os.path.join("runs", f"{FLAGS.dataset}-{FLAGS.variant}")

  # 2. The data (prepared once, then reused).
  if not registry.is_registered(FLAGS.dataset):
    logging.info("Dataset %s is not registered: read from <data_dir>/%s/, trained with the "
                 "default preset (the paper's protocol)", FLAGS.dataset, FLAGS.dataset)
  try:
    prepared = prepare(data_flags.prepare_config_from_flags(), FLAGS.output_dir,
                       data_dir=registry.resolve_data_dir(FLAGS.data_dir), raw_dir=FLAGS.raw_dir,
                       allow_download=FLAGS.download, overwrite=FLAGS.overwrite)
  except (DataFormatError, DatasetNotFoundError, ValueError) as error:
    return _fail(str(error), EXIT_CONFIG_ERROR)

  # 3. Train and export: one stage, or the full protocol's two.
  strategy = strategy_lib.create_strategy(config.train.strategy)
  console.first_compilation()  # after the strategy: it configures the runtime's collectives
  export_dir = FLAGS.export_dir or os.path.join(run_dir, "export")
  try:
    if FLAGS.protocol == "full":
      summary = full_protocol(config, prepared, run_dir, export_dir, strategy, task,
                              selection_from)
    else:
      summary = train_stage(config, prepared, run_dir, strategy, task, export_dir=export_dir)
  except StageFailed as failed:
    return failed.code
  if not task.is_chief:
    return 0

  # 4. Results (chief only).
  table = paper.comparison_table(FLAGS.dataset, FLAGS.variant, summary["test"] or summary["valid"])
  if FLAGS.protocol == "full":
    selection = summary["selection"]
    print(f"\nSelection stage: epoch {selection['selected_epoch']} of "
          f"{selection['epochs_trained']} selected on validation (HR@20 "
          f"{selection['valid']['hr_at_20']:.2f}, MRR@20 {selection['valid']['mrr_at_20']:.2f})."
          f"\nTest metrics of the refit on all training sessions for "
          f"{summary['epochs_trained']} epoch(s), in %:\n{table}\n")
  else:
    print(f"\nTest metrics of the selected epoch {summary['selected_epoch']} "
          f"(of {summary['epochs_trained']}), in %:\n{table}\n")
  if "authors_protocol" in summary:
    authors = summary["authors_protocol"]
    print(f"Authors' protocol (best test value over epochs, each its own epoch): "
          f"HR@20 {authors['hr_at_20']:.2f}  MRR@20 {authors['mrr_at_20']:.2f}")
  print(f"Results: {os.path.join(run_dir, run_dir_lib.METRICS_FILE)}")
  return 0


if __name__ == "__main__":
  app.run(main)
