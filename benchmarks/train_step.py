r"""Training-step speed against this machine's floor, measured side by side in one process.

    python -m benchmarks.train_step --dataset=gowalla --batch_sizes=100,512 \
        [--variants=default,table_dropout=0,jit_compile=false,mixed_precision=bfloat16]

The floor is the work no implementation of the paper's model can avoid per step (d = 256, full
softmax over N items): the score product `[B, d] x [d, N]` forward and its two backward products
(`[B, N] x [N, d]` for the queries and `[N, B] x [B, d]` for the table), plus the Adam update of
the `N x d` item table. Both parts are timed as standalone TensorFlow op sequences in the step's
dtype, with TensorFlow's native kernels and compiled by XLA; the floor is the faster products plus
the faster update. The trainer's real step (`trainer.training.Trainer`, same data pipeline) is
timed in the same process, interleaved with the floor, and reported as time per example and as a
ratio to the floor. So is each part of the step on one fixed batch (`step_gradients_ms`: forward
and backward; `step_query_tower_ms`: the query tower's share of it; `step_scoring_ms`: the
catalogue scoring and loss's share, also without the table dropout and as a plain product without
normalisation; `step_update_ms`: the Adam update of all variables), which shows where the time
beyond the floor goes. Each `--variants`
entry (an option changed over the flags' configuration) is timed the same way, against its own
floor, so the effect of XLA, bfloat16 or the table dropout is a ratio from one process.
"""

import collections
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
flags.DEFINE_list("variants", ["default", "table_dropout=0", "jit_compile=false",
                                "mixed_precision=bfloat16"],
                  "Configurations to time, each `default` or `option=value[+option=value]` over "
                  "the flags' configuration (`variant=srgnn`: another row of the paper); the "
                  "step's parts are timed for the first.")
flags.DEFINE_string("record_as", "train_step", "Name of the entry in results/benchmarks.json.")
flags.DEFINE_integer("steps", 30, "Timed steps per repetition.")
flags.DEFINE_integer("repetitions", 5, "Interleaved repetitions of floor and step (median kept).")


def floor_parts(batch_size: int, num_items: int, dim: int, dtype,
                jit_compile: bool) -> Dict[str, Callable]:
  """The unavoidable work of one step as stock-op functions: the products and the Adam update."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  table = tf.Variable(tf.random.normal([num_items, dim]), name="table")
  optimizer = tf.keras.optimizers.Adam(1e-3)
  optimizer.jit_compile = jit_compile
  optimizer.build([table])
  queries = tf.random.normal([batch_size, dim])
  upstream = tf.random.normal([batch_size, num_items])
  grad = tf.random.normal([num_items, dim])

  @tf.function(jit_compile=jit_compile)
  def products():
    q, t, g = (tf.cast(queries, dtype), tf.cast(table, dtype), tf.cast(upstream, dtype))
    logits = tf.matmul(q, t, transpose_b=True)               # forward  [B, N]
    grad_queries = tf.matmul(g, t)                           # backward [B, d]
    grad_table = tf.matmul(g, q, transpose_a=True)           # backward [N, d]
    return logits, grad_queries, grad_table  # whole outputs, so that XLA computes all of them

  @tf.function
  def update():
    optimizer.apply_gradients([(grad, table)])
    return table[0, 0]

  return {"products": products, "update": update}


def time_calls(function: Callable, steps: int) -> float:
  """Seconds per call, after one warm-up call."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.nest.flatten(function())[0].numpy()
  started = time.perf_counter()
  for _ in range(steps):
    result = function()
  tf.nest.flatten(result)[0].numpy()
  return (time.perf_counter() - started) / steps


def step_parts(trainer, batch) -> Dict[str, Callable]:
  """The trainer's step split into its parts, on one fixed batch (single replica)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrs_attenmixer import losses  # pylint: disable=g-import-not-at-top
  model = trainer.model
  variables = model.trainable_variables
  _, fixed_grads = trainer.gradients(batch)

  @tf.function(jit_compile=trainer.train_config.jit_compile)
  def query_tower():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(model.query_tower(batch["items"], training=True))
    grads = tape.gradient(loss, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return loss, [tf.convert_to_tensor(g) for g in grads]

  @tf.function
  def update():
    trainer.optimizer.apply_gradients(zip(fixed_grads, variables))
    return variables[0][0, 0]

  queries = tf.Variable(tf.math.l2_normalize(model.query_tower(batch["items"]), axis=-1))
  table = model.encoder.item_table
  targets = tf.cast(batch["target"], tf.int32)

  def scoring(logits_fn):
    """Forward and backward of the catalogue loss alone, from fixed session vectors."""
    @tf.function(jit_compile=trainer.train_config.jit_compile)
    def forward_backward():
      with tf.GradientTape() as tape:
        loss = losses.full_softmax_loss(logits_fn(), targets)
      return loss, [tf.convert_to_tensor(g) for g in tape.gradient(loss, [queries, table])]
    return forward_backward

  return {
      "gradients": lambda: trainer.gradients(batch),
      "query_tower": query_tower,
      "update": update,
      # The scoring's share of `gradients`, and what normalisation and table dropout add to it.
      "scoring": scoring(lambda: model.catalogue_logits(queries, training=True)),
      "scoring_without_table_dropout": scoring(
          lambda: model.catalogue_logits(queries, training=False)),
      "scoring_plain": scoring(
          lambda: model.config.scale * tf.matmul(queries, table, transpose_b=True)[:, 1:]),
  }


def median_ms(times: List[float]) -> float:
  return 1e3 * statistics.median(times)


def config_for(variant: str):
  """The flags' configuration changed by `option=value[+option=value]` (`default`: unchanged).

  `variant=NAME` selects another row of the paper (tfrs_attenmixer.config.VARIANTS) first.
  """
  assignments = ({} if variant == "default" else
                 dict(assignment.partition("=")[::2] for assignment in variant.split("+")))
  config = trainer_flags.config_from_flags(variant=assignments.pop("variant", None))
  changes = {"model": {}, "train": {}}
  for name, text in assignments.items():
    part = next((p for p in changes if hasattr(getattr(config, p), name)), None)
    if part is None:
      raise ValueError(f"--variants: {name!r} is not a model or training option")
    current = getattr(getattr(config, part), name)
    changes[part][name] = (text.lower() in ("1", "true") if isinstance(current, bool)
                           else type(current)(text))
  return dataclasses.replace(config, model=dataclasses.replace(config.model, **changes["model"]),
                             train=dataclasses.replace(config.train, **changes["train"]))


def measure(batch_size: int, variant: str, with_parts: bool) -> Dict:
  """Step and floor times (and the step's parts) over interleaved repetitions (medians)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.cluster import TaskInfo  # pylint: disable=g-import-not-at-top
  from trainer.strategy import create_strategy  # pylint: disable=g-import-not-at-top
  from trainer.training import Trainer  # pylint: disable=g-import-not-at-top
  prepared = prepare(data_flags.prepare_config_from_flags(), FLAGS.output_dir,
                     data_dir=registry.resolve_data_dir(FLAGS.data_dir))
  config = config_for(variant)
  config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                  batch_size=batch_size))
  tf.keras.mixed_precision.set_global_policy("float32")  # a previous variant may have changed it
  run_dir = os.path.join(FLAGS.output_dir, f".bench-run-{batch_size}")
  trainer = Trainer(config, prepared, run_dir, create_strategy(config.train.strategy),
                    TaskInfo("worker", 0, 1, True))
  iterator = iter(trainer._distributed("train", training=True))  # pylint: disable=protected-access
  step = lambda: trainer._train_step(iterator)  # pylint: disable=protected-access
  dtype = tf.bfloat16 if config.train.mixed_precision == "bfloat16" else tf.float32
  floors = {("native", "xla")[jit]: floor_parts(batch_size, prepared.num_items,
                                                config.model.embedding_dim, dtype, jit)
            for jit in (False, True)}
  parts = {}
  if with_parts:
    batch = next(iter(trainer._distributed("train", training=True)))  # pylint: disable=protected-access
    parts = step_parts(trainer, batch)
  times: Dict[str, List[float]] = collections.defaultdict(list)
  for _ in range(FLAGS.repetitions):
    times["step"].append(time_calls(step, FLAGS.steps))
    for kind, functions in floors.items():
      for name, function in functions.items():
        times[f"floor_{name}_{kind}"].append(time_calls(function, FLAGS.steps))
    for name, function in parts.items():
      times[f"step_{name}"].append(time_calls(function, FLAGS.steps))
  medians = {name: median_ms(values) for name, values in times.items()}
  floor_products = min(medians["floor_products_native"], medians["floor_products_xla"])
  floor_update = min(medians["floor_update_native"], medians["floor_update_xla"])
  floor = floor_products + floor_update
  step_ms = medians.pop("step")
  return {
      "variant": variant,
      "batch_size": batch_size,
      "step_ms": step_ms,
      "floor_ms": floor,
      "ratio": step_ms / floor,
      "examples_per_second": 1e3 * batch_size / step_ms,
      "floor_examples_per_second": 1e3 * batch_size / floor,
      **{f"{name}_ms": value for name, value in sorted(medians.items())},
  }


def main(argv):
  del argv
  results: List[Dict] = [measure(int(b), variant, with_parts=variant == FLAGS.variants[0])
                         for variant in FLAGS.variants for b in FLAGS.batch_sizes]
  for r in results:
    logging.info("%s, batch %d: step %.1f ms, floor %.1f ms, ratio %.2f, %.0f examples/s",
                 r["variant"], r["batch_size"], r["step_ms"], r["floor_ms"], r["ratio"],
                 r["examples_per_second"])
  print(json.dumps(results, indent=1))
  common.record(FLAGS.record_as, results)


if __name__ == "__main__":
  app.run(main)
