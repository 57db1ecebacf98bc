r"""Throughput of the tf.data input pipeline alone (read, parse, expand prefixes, shuffle, batch).

    python -m benchmarks.input_pipeline --dataset=gowalla --batch_size=100

Iterates full training epochs of the prepared dataset without a model and reports examples per
second (the median of `--epochs` passes), to show that input is never the training bottleneck.
"""

import statistics
import time

from absl import app
from absl import flags
from absl import logging

from benchmarks import common
from data import flags as data_flags
from data import registry
from data.input_config import InputConfig
from data.prepare import prepare

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 100, "Batch size.")
flags.DEFINE_integer("epochs", 3, "Full passes over the training split to time.")


def main(argv):
  del argv
  from data.pipeline import make_dataset  # pylint: disable=g-import-not-at-top  (imports TF)
  prepared = prepare(data_flags.prepare_config_from_flags(), FLAGS.output_dir,
                     data_dir=registry.resolve_data_dir(FLAGS.data_dir))
  config = InputConfig(batch_size=FLAGS.batch_size)
  rates = []
  for epoch in range(FLAGS.epochs):
    started, examples = time.perf_counter(), 0
    for batch in make_dataset(prepared, "train", config, training=True, epoch=epoch):
      examples += int(batch["target"].shape[0])
    rates.append(examples / (time.perf_counter() - started))
    logging.info("epoch %d: %d examples, %.0f examples/s", epoch, examples, rates[-1])
  result = {"dataset": prepared.name, "batch_size": FLAGS.batch_size,
            "examples_per_second": statistics.median(rates), "per_epoch": rates}
  print(f"input pipeline on {prepared.name}: {result['examples_per_second']:,.0f} examples/s "
        f"(median of {FLAGS.epochs} epochs, batch {FLAGS.batch_size})")
  common.record("input_pipeline", result)


if __name__ == "__main__":
  app.run(main)
