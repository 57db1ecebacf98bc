r"""Training-step speed against this machine's floor, measured side by side in one process.

    python -m benchmarks.train_step --dataset=gowalla --batch_sizes=100,512

The floor is the work no implementation of the paper's model can avoid per step (d = 256, full
softmax over N items): the score product `[B, d] x [d, N]` forward, its two backward products
(`[B, N] x [N, d]` for the queries and `[N, B] x [B, d]` for the table), and the Adam update of the
`N x d` item table, each timed as a standalone TensorFlow op sequence in the step's dtype, both
with TensorFlow's native kernels and compiled by XLA; the faster of the two is the floor (on this
machine's CPU, native MatMul was about 1.3x faster than XLA's dot for these shapes). The
trainer's real step (`trainer.training.Trainer`, same data pipeline) is timed in the same process,
interleaved with the floor, and reported as time per example and as a ratio to the floor.
"""

import dataclasses
import json
import os
import statistics
import time
from typing import Callable, Dict, List

from absl import app
from absl import flags
from absl import logging

from benchmarks import common
from data import flags as data_flags
from data import registry
from data.prepare import prepare
from trainer import flags as trainer_flags

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["100", "512"], "Batch sizes to measure.")
flags.DEFINE_integer("steps", 30, "Timed steps per repetition.")
flags.DEFINE_integer("repetitions", 5, "Interleaved repetitions of floor and step (median kept).")


def floor_step(batch_size: int, num_items: int, dim: int, dtype, jit_compile: bool) -> Callable:
  """The unavoidable work of one step, as a function of stock ops (XLA-compiled or not)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  table = tf.Variable(tf.random.normal([num_items, dim]), name="table")
  optimizer = tf.keras.optimizers.Adam(1e-3)
  optimizer.build([table])
  queries = tf.random.normal([batch_size, dim])
  upstream = tf.random.normal([batch_size, num_items])

  @tf.function(jit_compile=jit_compile)
  def products():
    q, t, g = (tf.cast(queries, dtype), tf.cast(table, dtype), tf.cast(upstream, dtype))
    logits = tf.matmul(q, t, transpose_b=True)               # forward  [B, N]
    grad_queries = tf.matmul(g, t)                           # backward [B, d]
    grad_table = tf.matmul(g, q, transpose_a=True)           # backward [N, d]
    return logits, grad_queries, tf.cast(grad_table, tf.float32)

  @tf.function
  def step():
    logits, grad_queries, grad_table = products()
    optimizer.apply_gradients([(grad_table, table)])
    return tf.reduce_sum(logits[:1, :1]) + tf.reduce_sum(grad_queries[:1, :1])

  return step


def time_calls(function: Callable, steps: int) -> float:
  """Seconds per call, after one warm-up call."""
  function().numpy()
  started = time.perf_counter()
  for _ in range(steps):
    result = function()
  result.numpy()
  return (time.perf_counter() - started) / steps


def measure(batch_size: int) -> Dict:
  """Median step and floor times (seconds) over interleaved repetitions."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.cluster import TaskInfo  # pylint: disable=g-import-not-at-top
  from trainer.strategy import create_strategy  # pylint: disable=g-import-not-at-top
  from trainer.training import Trainer  # pylint: disable=g-import-not-at-top
  prepared = prepare(data_flags.prepare_config_from_flags(), FLAGS.output_dir,
                     data_dir=registry.resolve_data_dir(FLAGS.data_dir))
  config = trainer_flags.config_from_flags()
  config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                  batch_size=batch_size))
  run_dir = os.path.join(FLAGS.output_dir, f".bench-run-{batch_size}")
  trainer = Trainer(config, prepared, run_dir, create_strategy(config.train.strategy),
                    TaskInfo("worker", 0, 1, True))
  iterator = iter(trainer._distributed("train", training=True))  # pylint: disable=protected-access
  step = lambda: trainer._train_step(iterator)  # pylint: disable=protected-access
  dtype = tf.bfloat16 if config.train.mixed_precision == "bfloat16" else tf.float32
  floors = {jit: floor_step(batch_size, prepared.num_items, config.model.embedding_dim, dtype, jit)
            for jit in (False, True)}
  step_times, floor_times = [], []
  native_times, xla_times = [], []
  for _ in range(FLAGS.repetitions):
    step_times.append(time_calls(step, FLAGS.steps))
    native_times.append(time_calls(floors[False], FLAGS.steps))
    xla_times.append(time_calls(floors[True], FLAGS.steps))
    floor_times.append(min(native_times[-1], xla_times[-1]))
  step_time, floor_time = statistics.median(step_times), statistics.median(floor_times)
  return {
      "batch_size": batch_size,
      "step_ms": 1e3 * step_time,
      "floor_ms": 1e3 * floor_time,
      "floor_native_ms": 1e3 * statistics.median(native_times),
      "floor_xla_ms": 1e3 * statistics.median(xla_times),
      "ratio": step_time / floor_time,
      "examples_per_second": batch_size / step_time,
      "floor_examples_per_second": batch_size / floor_time,
      "per_repetition_ratios": [s / f for s, f in zip(step_times, floor_times)],
      "mixed_precision": config.train.mixed_precision,
      "jit_compile": config.train.jit_compile,
  }


def main(argv):
  del argv
  results: List[Dict] = [measure(int(b)) for b in FLAGS.batch_sizes]
  for r in results:
    logging.info("batch %d: step %.1f ms, floor %.1f ms, ratio %.2f, %.0f examples/s",
                 r["batch_size"], r["step_ms"], r["floor_ms"], r["ratio"],
                 r["examples_per_second"])
  print(json.dumps(results, indent=1))
  common.record("train_step", results)


if __name__ == "__main__":
  app.run(main)
