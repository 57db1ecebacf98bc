r"""Trains Atten-Mixer (or a baseline of the paper) on a session dataset, evaluates it, exports it.

    python -m trainer.main --dataset=gowalla

prepares the dataset if needed (`data.prepare`, reused when already prepared), trains with the
paper's protocol (per-dataset preset; every option can be overridden by a flag, see --help),
selects the epoch on the validation split, reports that epoch's test metrics beside the paper's,
and exports a servable SavedModel. Re-running the same command resumes an interrupted run.

Distributed: `--strategy=multi_worker` with `TF_CONFIG` set in every worker (see trainer/k8s/).
"""

import json
import os
import resource
import sys
import time
from typing import Any, Dict

from absl import app
from absl import flags
from absl import logging

from data import flags as data_flags
from data import registry
from data.errors import DataFormatError
from data.prepare import prepare
from trainer import flags as trainer_flags
from trainer import paper
from trainer import run_dir as run_dir_lib
from trainer import cluster

FLAGS = flags.FLAGS

flags.DEFINE_list("export_indexes", ["brute_force", "scann", "portable_ann"],
                  "Top-K indexes to export at the end of training, each as its own servable "
                  "model: brute_force -> <export_dir>/attenmixer, others -> "
                  "<export_dir>/attenmixer_<index>. Empty: no export.")

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


def export_name(index: str) -> str:
  return "attenmixer" if index == "brute_force" else f"attenmixer_{index}"


def check_space(trainer, run_dir: str, export_dir: str) -> None:
  """Fails before training when the run or export folder cannot hold what the run will write.

  Needed: two training checkpoints (the next one is written before the previous is deleted), the
  selected epoch's weights, and each export.
  """
  weights = trainer.weights_bytes()
  exports = EXPORT_COPIES_OF_WEIGHTS * weights * len(FLAGS.export_indexes)
  run_needs = 2 * trainer.checkpoint_bytes() + weights
  if FLAGS.export_indexes and os.stat(run_dir).st_dev != os.stat(export_dir).st_dev:
    run_dir_lib.check_free_space(run_dir, run_needs, "this run's checkpoints")
    run_dir_lib.check_free_space(export_dir, exports, "this run's exports")
  else:
    run_dir_lib.check_free_space(run_dir, run_needs + exports, "this run (checkpoints, exports)")


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
  except ValueError as error:
    return _fail(str(error), EXIT_CONFIG_ERROR)
  if FLAGS.print_config:
    print(json.dumps(run_record(config), sort_keys=True))
    return 0
  # Logical devices must be configured before TensorFlow's runtime starts (preparing data may
  # start it).
  from trainer import strategy as strategy_lib  # pylint: disable=g-import-not-at-top  (imports TF)
  strategy_lib.split_cpu(config.train.num_cpu_devices)
  run_dir = FLAGS.run_dir or os.path.join("runs", f"{FLAGS.dataset}-{FLAGS.variant}")

  # 2. The data (prepared once, then reused).
  try:
    prepared = prepare(data_flags.prepare_config_from_flags(), FLAGS.output_dir,
                       data_dir=registry.resolve_data_dir(FLAGS.data_dir), raw_dir=FLAGS.raw_dir,
                       allow_download=FLAGS.download, overwrite=FLAGS.overwrite)
  except (DataFormatError, registry.DatasetNotFoundError, ValueError) as error:
    return _fail(str(error), EXIT_CONFIG_ERROR)
  stats = prepared.stats()

  # 3. The run folder: a new run, or the same run resumed.
  record = {**run_record(config), "variant": FLAGS.variant,
            "prepared_dir": os.path.abspath(prepared.directory)}
  export_dir = FLAGS.export_dir or os.path.join(run_dir, "export")
  try:
    if task.is_chief:
      run_dir_lib.check_writable(run_dir)
      if FLAGS.export_indexes:
        run_dir_lib.check_writable(export_dir)
      run_dir_lib.claim(run_dir, record)
  except run_dir_lib.RunDirError as error:
    return _fail(str(error), EXIT_CONFIG_ERROR)

  # 4. Train.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from trainer.training import NonFiniteLossError, OutputWriteError, Trainer
  tf.get_logger().setLevel("WARNING")  # TensorFlow's per-checkpoint INFO lines
  strategy = strategy_lib.create_strategy(config.train.strategy)
  logging.info("Training %s on %s (%d items) with %d replica(s); run folder %s", FLAGS.variant,
               FLAGS.dataset, prepared.num_items, strategy.num_replicas_in_sync, run_dir)
  started = time.time()
  trainer = Trainer(config, prepared, run_dir, strategy, task)
  try:
    if task.is_chief:
      check_space(trainer, run_dir, export_dir)
    trainer.train()
  except run_dir_lib.RunDirError as error:
    return _fail(str(error), EXIT_CONFIG_ERROR)
  except NonFiniteLossError as error:
    return _fail(str(error), EXIT_TRAINING_FAILED)
  except OutputWriteError as error:
    return _fail(str(error), EXIT_WRITE_FAILED)
  logging.info("Weights fingerprint: %s", trainer.weights_fingerprint())
  if not task.is_chief:
    return 0

  # 5. Results and export (chief only).
  trainer.restore_best()
  summary = trainer.summary()
  summary.update({"dataset": FLAGS.dataset, "variant": FLAGS.variant, "config": config.to_dict(),
                  "dataset_stats": stats, "wall_seconds": time.time() - started,
                  # Linux reports kilobytes; this invocation only (a resumed run's earlier ones
                  # are not counted).
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "steps_per_epoch": trainer.steps_per_epoch,
                  "replicas": strategy.num_replicas_in_sync,
                  "published": paper.published(FLAGS.dataset, FLAGS.variant)})
  try:
    if FLAGS.export_indexes:
      from serving.export import export_model  # pylint: disable=g-import-not-at-top
      summary["exports"] = {
          index: export_model(trainer.model, prepared, export_dir, model_name=export_name(index),
                              index=index, max_length=config.train.max_length,
                              metrics=summary["valid"])
          for index in FLAGS.export_indexes}
    run_dir_lib.write_json(os.path.join(run_dir, run_dir_lib.METRICS_FILE), summary)
  except (OSError, tf.errors.OpError) as error:
    return _fail(f"could not write the results ({run_dir_lib.write_error_reason(error)}); the "
                 f"training checkpoints in {run_dir} are intact: free space, then rerun the same "
                 "command to export again", EXIT_WRITE_FAILED)
  table = paper.comparison_table(FLAGS.dataset, FLAGS.variant, summary["test"] or summary["valid"])
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
