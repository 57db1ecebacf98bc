r"""Full-catalogue evaluation time and memory against the floor of its score product.

    python -m benchmarks.evaluation --dataset=gowalla [--split=test] [--repetitions=2] \
        [--eval_batch_sizes=500,2000]

Times `Trainer.evaluate` (the trainer's own evaluation: every example of the split ranked against
the whole catalogue, HR/MRR/NDCG at 5, 10, 20) and, in the same process, the floor: the score
products `[b, d] x [d, N]` alone for the same number of examples at the same evaluation batch
size (faster of native kernels and XLA). Reports seconds, examples/second, the ratio to the floor
and the process's peak resident memory. The weights do not change the time, so the model keeps
its initial weights (no trained run needed).

Where the time goes, as seconds for the whole split (one fixed batch timed, times the number of
batches): `steps_seconds`, the compiled evaluation step alone (no input pipeline, no per-batch
dispatch); `query_tower_seconds`, the session encoder's forward pass; `ranking_seconds`, scoring
the catalogue and ranking the targets from fixed session vectors (the floor's product plus
comparison and counting); `input_seconds`, one pass of the input pipeline alone;
and one more evaluation pass over the real batches that times, per batch, fetching it
(`loop_fetch_seconds`), the step call (`loop_step_seconds`) and reading the metric back
(`loop_sync_seconds`). Each evaluation batch size of `--eval_batch_sizes` is measured this way.
"""

import dataclasses
import os
import resource
import statistics
import time
from typing import Dict

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
flags.DEFINE_list("eval_batch_sizes", [], "Evaluation batch sizes to measure (default: the "
                  "configuration's --eval_batch_size).")
flags.DEFINE_integer("part_calls", 20, "Timed calls of each part on one fixed batch.")


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


def part_seconds(trainer, split: str, num_batches: int) -> Dict[str, float]:
  """Seconds for the whole split of the evaluation's parts (see the module doc)."""
  # pylint: disable=g-import-not-at-top,protected-access
  import tensorflow as tf
  from tfrs_attenmixer import metrics as metrics_lib
  model = trainer.model
  jit_compile = trainer.train_config.jit_compile
  batches = trainer._distributed(split, training=False)
  rows = trainer.eval_rows()
  started = time.perf_counter()
  for batch in batches:
    pass
  input_seconds = time.perf_counter() - started
  loop = dict.fromkeys(("fetch", "step", "sync"), 0.0)
  iterator = iter(batches)
  while True:
    started = time.perf_counter()
    batch = next(iterator, None)
    fetched = time.perf_counter()
    if batch is None:
      break
    trainer._eval_step(batch, rows)
    stepped = time.perf_counter()
    model.ranking_metrics[0].result().numpy()
    loop["fetch"] += fetched - started
    loop["step"] += stepped - fetched
    loop["sync"] += time.perf_counter() - stepped
  batch = next(iter(batches))
  queries = model.query_tower(batch["items"], training=False)

  def step():
    trainer._eval_step(batch, rows)
    return model.ranking_metrics[0].result()

  @tf.function(jit_compile=jit_compile)
  def query_tower():
    return model.query_tower(batch["items"], training=False)

  ranks = tf.function(metrics_lib.target_ranks, jit_compile=jit_compile)

  @tf.function
  def ranking():  # as the evaluation step: the product natively, the ranking compiled
    return tf.reduce_sum(ranks(tf.matmul(queries, rows, transpose_b=True), batch["target"]))

  seconds = {name: num_batches * common.time_calls(function, FLAGS.part_calls)
             for name, function in (("steps", step), ("query_tower", query_tower),
                                    ("ranking", ranking))}
  for metric in model.ranking_metrics:
    metric.reset_state()
  return {**{f"{name}_seconds": value for name, value in seconds.items()},
          "input_seconds": input_seconds,
          **{f"loop_{name}_seconds": value for name, value in loop.items()}}


def measure(prepared, eval_batch_size: int) -> Dict:
  """One evaluation batch size: evaluation time, its parts and its floor."""
  # pylint: disable=g-import-not-at-top  (TensorFlow after flag parsing)
  from trainer.cluster import TaskInfo
  from trainer.strategy import create_strategy
  from trainer.training import Trainer
  config = trainer_flags.config_from_flags()
  config = dataclasses.replace(config, train=dataclasses.replace(
      config.train, eval_batch_size=eval_batch_size))
  trainer = Trainer(config, prepared, os.path.join(FLAGS.output_dir, ".bench-eval-run"),
                    create_strategy(config.train.strategy), TaskInfo("worker", 0, 1, True))
  seconds = []
  for repetition in range(FLAGS.repetitions):
    started = time.perf_counter()
    metrics = trainer.evaluate(FLAGS.split)
    seconds.append(time.perf_counter() - started)
    logging.info("evaluation %d at batch %d: %.1f s", repetition + 1, eval_batch_size,
                 seconds[-1])
  steady = statistics.median(seconds[1:] or seconds)
  num_examples = prepared.stats()["splits"][FLAGS.split]["examples"]
  floor = score_product_seconds(num_examples, eval_batch_size, prepared.num_items,
                                config.model.embedding_dim)
  parts = part_seconds(trainer, FLAGS.split, num_batches=num_examples / eval_batch_size)
  result = {
      "dataset": prepared.name, "split": FLAGS.split, "examples": num_examples,
      "eval_batch_size": eval_batch_size,
      "first_seconds": seconds[0], "seconds": steady,
      "examples_per_second": num_examples / steady,
      "floor_seconds": floor, "ratio": steady / floor,
      **parts,
      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
      "hr_at_20": metrics["hr_at_20"],
  }
  print(f"evaluation of {num_examples:,} {FLAGS.split} examples at batch {eval_batch_size}: "
        f"{steady:.1f} s ({result['examples_per_second']:,.0f} examples/s; first pass "
        f"{seconds[0]:.1f} s), score-product floor {floor:.1f} s, ratio {result['ratio']:.2f}; "
        f"compiled steps alone {parts['steps_seconds']:.1f} s (query tower "
        f"{parts['query_tower_seconds']:.1f} s, ranking {parts['ranking_seconds']:.1f} s), "
        f"input pipeline alone {parts['input_seconds']:.1f} s; a pass timed per batch: "
        f"fetching {parts['loop_fetch_seconds']:.1f} s, step calls "
        f"{parts['loop_step_seconds']:.1f} s, metric reads {parts['loop_sync_seconds']:.1f} s; "
        f"peak memory "
        f"{result['peak_rss_gb']:.2f} GB")
  return result


def main(argv):
  del argv
  prepared = prepare(data_flags.prepare_config_from_flags(), FLAGS.output_dir,
                     data_dir=registry.resolve_data_dir(FLAGS.data_dir))
  batch_sizes = [int(b) for b in FLAGS.eval_batch_sizes] or [
      trainer_flags.config_from_flags().train.eval_batch_size]
  common.record("evaluation", [measure(prepared, b) for b in batch_sizes])


if __name__ == "__main__":
  app.run(main)
