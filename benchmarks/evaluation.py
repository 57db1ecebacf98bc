r"""Full-catalogue evaluation time and memory against the floor of its score product.

    python -m benchmarks.evaluation --dataset=gowalla [--split=test] [--repetitions=2]

Times `Trainer.evaluate` (the trainer's own evaluation: every example of the split ranked against
the whole catalogue, HR/MRR/NDCG at 5, 10, 20) and, in the same process, the floor: the score
products `[b, d] x [d, N]` alone for the same number of examples at the same evaluation batch
size (faster of native kernels and XLA). Reports seconds, examples/second, the ratio to the floor
and the process's peak resident memory. The weights do not change the time, so the model keeps
its initial weights (no trained run needed).
"""

import os
import resource
import statistics
import time

from absl import app
from absl import flags
from absl import logging

from benchmarks import common
from data import flags as data_flags
from data import registry
from data.prepare import prepare
from trainer import flags as trainer_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("split", "test", "Split to evaluate (valid or test).")
flags.DEFINE_integer("repetitions", 2, "Timed evaluations (the first also compiles; the "
                     "median of the others is reported when there are several).")


def score_product_seconds(num_examples: int, batch_size: int, num_items: int, dim: int) -> float:
  """Seconds of the `[b, d] x [d, N]` products of one evaluation pass, nothing else."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  table = tf.Variable(tf.random.normal([num_items, dim]))
  queries = tf.random.normal([batch_size, dim])
  full, rest = divmod(num_examples, batch_size)
  times = []
  for jit_compile in (False, True):
    product = tf.function(lambda q: tf.matmul(q, table, transpose_b=True),
                          jit_compile=jit_compile)
    product(queries).numpy()
    if rest:
      product(queries[:rest]).numpy()
    started = time.perf_counter()
    for _ in range(full):
      scores = product(queries)
    if rest:
      scores = product(queries[:rest])
    scores.numpy()
    times.append(time.perf_counter() - started)
  return min(times)


def main(argv):
  del argv
  # pylint: disable=g-import-not-at-top  (TensorFlow after flag parsing)
  from trainer.cluster import TaskInfo
  from trainer.strategy import create_strategy
  from trainer.training import Trainer
  prepared = prepare(data_flags.prepare_config_from_flags(), FLAGS.output_dir,
                     data_dir=registry.resolve_data_dir(FLAGS.data_dir))
  config = trainer_flags.config_from_flags()
  trainer = Trainer(config, prepared, os.path.join(FLAGS.output_dir, ".bench-eval-run"),
                    create_strategy(config.train.strategy), TaskInfo("worker", 0, 1, True))
  seconds = []
  for repetition in range(FLAGS.repetitions):
    started = time.perf_counter()
    metrics = trainer.evaluate(FLAGS.split)
    seconds.append(time.perf_counter() - started)
    logging.info("evaluation %d: %.1f s", repetition + 1, seconds[-1])
  steady = statistics.median(seconds[1:] or seconds)
  num_examples = prepared.stats()["splits"][FLAGS.split]["examples"]
  floor = score_product_seconds(num_examples, config.train.eval_batch_size, prepared.num_items,
                                config.model.embedding_dim)
  result = {
      "dataset": prepared.name, "split": FLAGS.split, "examples": num_examples,
      "eval_batch_size": config.train.eval_batch_size,
      "first_seconds": seconds[0], "seconds": steady,
      "examples_per_second": num_examples / steady,
      "floor_seconds": floor, "ratio": steady / floor,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      "hr_at_20": metrics["hr_at_20"],
  }
  print(f"evaluation of {num_examples:,} {FLAGS.split} examples: {steady:.1f} s "
        f"({result['examples_per_second']:,.0f} examples/s; first pass {seconds[0]:.1f} s), "
        f"score-product floor {floor:.1f} s, ratio {result['ratio']:.2f}, peak memory "
        f"{result['peak_rss_gb']:.2f} GB")
  common.record("evaluation", result)


if __name__ == "__main__":
  app.run(main)
