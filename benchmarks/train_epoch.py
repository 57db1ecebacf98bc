r"""A whole trainer epoch against the training step's own speed, measured in one process.

    python -m benchmarks.train_epoch --dataset=gowalla --precisions=float32,bfloat16 \
        [--batch_size=100] [--max_steps_per_epoch=0]

For each precision, first the step as `benchmarks.train_step` times it (the trainer's compiled
step on the input pipeline, `--steps` steps, median of `--repetitions`), then one epoch of
`trainer.training.Trainer.train` in a fresh run folder, exactly what `python -m trainer.main`
runs: input pipeline, steps, checkpoints every `checkpoint_every_steps`, the progress bar, and
the evaluation of the validation and test splits. The step is timed after one step at every
batch width (`benchmarks.step_ops.warmed_iterator`), on the epoch's first batches: their mean
width (`step_mean_batch_width`) is recorded beside the epoch's. Recorded per precision: the
step's and the epoch's examples/s and their ratio (`epoch_over_step`), the epoch's training
seconds, the evaluation's seconds and their ratio (`eval_over_epoch`), and the epoch's
validation metrics.
"""

import dataclasses
import os
import shutil
import statistics
import tempfile
from typing import Dict, List

import numpy as np

from absl import app
from absl import flags
from absl import logging

from benchmarks import common
from benchmarks import step_ops
from data import flags as data_flags
from data import registry
from data.prepare import prepare
from trainer import flags as trainer_flags

FLAGS = flags.FLAGS
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Values of --mixed_precision to run.")
flags.DEFINE_integer("steps", 30, "Timed steps per repetition of the step alone.")
flags.DEFINE_integer("repetitions", 5, "Repetitions of the step alone (median kept).")
flags.DEFINE_string("record_as", "epoch", "Entry of results/benchmarks.json (empty: none).")


def _trainer(config, prepared, run_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.cluster import TaskInfo  # pylint: disable=g-import-not-at-top
  from trainer.strategy import create_strategy  # pylint: disable=g-import-not-at-top
  from trainer.training import Trainer  # pylint: disable=g-import-not-at-top
  tf.keras.mixed_precision.set_global_policy("float32")  # a previous precision may have set it
  return Trainer(config, prepared, run_dir, create_strategy(config.train.strategy),
                 TaskInfo("worker", 0, 1, True))


def measure(precision: str, prepared, scratch: str) -> Dict:
  """The step's and one epoch's speed, and the epoch's evaluation time, for one precision."""
  config = trainer_flags.config_from_flags()
  config = dataclasses.replace(config, train=dataclasses.replace(
      config.train, mixed_precision=precision, epochs=1))
  step_trainer = _trainer(config, prepared, os.path.join(scratch, f"step-{precision}"))
  iterator, _ = step_ops.warmed_iterator(step_trainer)
  widths = step_ops.batch_widths(step_trainer, step_trainer.steps_per_epoch)
  step_seconds = statistics.median(
      common.time_calls(lambda: step_trainer._train_step(iterator), FLAGS.steps)  # pylint: disable=protected-access
      for _ in range(FLAGS.repetitions))
  del step_trainer, iterator
  trainer = _trainer(config, prepared, os.path.join(scratch, f"epoch-{precision}"))
  record = trainer.train()[-1]
  batch_size = config.train.batch_size
  step_rate = batch_size / step_seconds
  result = {
      "precision": precision,
      "batch_size": batch_size,
      "steps": trainer.steps_per_epoch,
      "step_ms": 1e3 * step_seconds,
      "step_examples_per_second": step_rate,
      "epoch_examples_per_second": record.examples_per_second,
      "epoch_over_step": record.examples_per_second / step_rate,
      "epoch_seconds": record.train_seconds,
      "eval_seconds": record.eval_seconds,
      "eval_over_epoch": record.eval_seconds / record.train_seconds,
      "step_mean_batch_width": float(np.mean(widths[:FLAGS.repetitions * (FLAGS.steps + 1)])),
      "epoch_mean_batch_width": float(np.mean(widths)),
      "valid_hr_at_20": 100 * record.valid["hr_at_20"],
      "valid_mrr_at_20": 100 * record.valid["mrr_at_20"],
  }
  logging.info("%s: step %.0f examples/s, epoch %.0f examples/s (%.2fx); epoch %.0f s, "
               "evaluation %.0f s (%.0f%%)", precision, step_rate, record.examples_per_second,
               result["epoch_over_step"], record.train_seconds, record.eval_seconds,
               100 * result["eval_over_epoch"])
  return result


def main(argv):
  del argv
  prepared = prepare(data_flags.prepare_config_from_flags(), FLAGS.output_dir,
                     data_dir=registry.resolve_data_dir(FLAGS.data_dir))
  scratch = tempfile.mkdtemp(prefix="train_epoch-")
  try:
    results: List[Dict] = [measure(p, prepared, scratch) for p in FLAGS.precisions]
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  for r in results:
    print(r)
  if FLAGS.record_as:
    common.record(FLAGS.record_as, results)


if __name__ == "__main__":
  app.run(main)
