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
ratio to the floor. So is each part of the step on one fixed batch (`step_*_ms`, see
`step_parts`), which shows where the time beyond the floor goes, and `step_cached_input_ms`: the
same step fed one batch cached in memory instead of the input pipeline, the bound that any
prefetch or parallelism setting of the pipeline could reach (first variant only).

`floor_tower_products_*_ms` times the query tower's own matrix products forward and backward
(`step_ops.tower_product_parts`, float32 as the tower runs, at the timed batches' mean width
rounded: the trainer cuts each batch to its longest session, `--length_multiple`);
`ratio_with_tower` is the step against the floor plus the faster of them. Before the timing, one
step runs at every width the input can produce, so that no timed step waits for XLA to compile
(`batch_widths`, `mean_batch_width`).

`floor_update_fused_ms` times TensorFlow's fused Adam kernel (`ResourceApplyAdam`, which the
trainer's `FusedAdam` runs) on the same table: it is faster than the floor's own update, so the
step is also reported against the stricter floor that uses it (`strict_floor_ms`,
`strict_ratio`).

Each `--variants` entry (an option changed over the flags' configuration) is timed the same way,
against its own floor, so the effect of XLA, bfloat16 or the table dropout is a ratio from one
process. Thread settings apply to a whole process (`--intra_op_threads`, `--inter_op_threads`;
benchmarks.threads runs one process per setting).
"""

import collections
import dataclasses
import json
import os
import statistics

import numpy as np
from typing import Callable, Dict, List

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
flags.DEFINE_list("batch_sizes", ["100", "512"], "Batch sizes to measure.")
flags.DEFINE_list("variants", ["default", "table_dropout=0", "jit_compile=false",
                                "mixed_precision=bfloat16"],
                  "Configurations to time, each `default` or `option=value[+option=value]` over "
                  "the flags' configuration (`variant=srgnn`: another row of the paper); the "
                  "step's parts are timed for the first.")
flags.DEFINE_string("record_as", "train_step", "Name of the entry in results/benchmarks.json "
                    "(empty: not recorded there).")
flags.DEFINE_string("json_output", None, "Also write the results to this JSON file.")
flags.DEFINE_integer("steps", 30, "Timed steps per repetition.")
flags.DEFINE_integer("repetitions", 5, "Interleaved repetitions of floor and step (median kept).")
flags.DEFINE_bool("parts", True, "Time the step's parts and the extra comparisons for the "
                  "first variant.")
flags.DEFINE_integer("intra_op_threads", 0, "Threads of one op (0: TensorFlow's default, the "
                     "number of cores).")
flags.DEFINE_integer("inter_op_threads", 0, "Ops run concurrently (0: TensorFlow's default).")

# How each op sequence is timed: (name in the results, jit_compile).
COMPILERS = (("native", False), ("xla", True))


def step_parts(trainer, batch) -> Dict[str, Callable]:
  """The trainer's step split into its parts, on one fixed batch (single replica).

  For the full softmax (`SessionRetrievalModel.full_softmax_gradients`, see
  `tfrs_attenmixer/catalogue_softmax.py`): `query_tower` (forward and backward, as the step runs
  it), `candidate_rows` (dropout and normalisation of the table), `softmax_products` (the three
  score products and the softmax), `table_gradient` (its chain rule and sparse rows) and
  `update` (the optimizer on every variable). `gradients` is all of them but the update.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrs_attenmixer import catalogue_softmax  # pylint: disable=g-import-not-at-top
  model = trainer.model
  variables = model.trainable_variables
  _, fixed_grads = trainer.gradients(batch)

  @tf.function
  def update():
    trainer.optimizer.apply_gradients(zip(fixed_grads, variables))
    return variables[0][0, 0]

  parts = {"gradients": lambda: trainer.gradients(batch), "update": update}
  if model.config.loss != "full_softmax":
    return parts
  table = tf.convert_to_tensor(model.encoder.item_table)
  options = dict(rate=model.config.table_dropout, scale=model.config.scale,
                 normalize=model.config.normalize)
  keys = tf.constant([1, 2], tf.int32)
  targets = tf.cast(batch["target"], tf.int32)
  rows, factors, keep = catalogue_softmax.candidate_rows(table, keys, dtype=model.score_dtype,
                                                        **options)
  tower = tf.function(lambda items: model.query_tower(items, training=True),
                      jit_compile=trainer.train_config.jit_compile)
  queries = tower(batch["items"])
  weight = tf.constant(1.0 / int(targets.shape[0]))
  _, grad_queries, grad_rows, target_rows, probabilities, logits = (
      catalogue_softmax.softmax_products(queries, rows, targets, weight))
  scores = ((probabilities, logits, weight) if targets.shape[0] < table.shape[1] else None)
  lookups = int(np.prod(batch["items"].shape))
  lookup_ids = tf.reshape(batch["items"], [-1])
  lookup_values = tf.random.normal([lookups, table.shape[1]])

  @tf.function
  def query_tower():
    with tf.GradientTape() as tape:
      q = tower(batch["items"])
    grads = tape.gradient(q, variables, output_gradients=grad_queries)
    return tf.nest.flatten(grads, expand_composites=True)

  parts.update({
      "query_tower": query_tower,
      "candidate_rows": tf.function(lambda: catalogue_softmax.candidate_rows(
          table, keys, dtype=model.score_dtype, **options)),
      "softmax_products": tf.function(lambda: catalogue_softmax.softmax_products(
          queries, rows, targets, weight)),
      "table_gradient": tf.function(lambda: catalogue_softmax.table_gradient(
          table, keys, factors=factors, keep=keep, grad_rows=grad_rows, row_ids=targets - 1, row_values=target_rows,
          lookup_ids=lookup_ids, lookup_values=lookup_values, l2=trainer.train_config.l2,
          scores=scores, **options)),
  })
  return parts


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
  from data.pipeline import make_dataset  # pylint: disable=g-import-not-at-top
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
  iterator, widths = step_ops.warmed_iterator(trainer)
  step = lambda: trainer._train_step(iterator)  # pylint: disable=protected-access
  dtype = tf.bfloat16 if trainer.precision == "bfloat16" else tf.float32
  mean_width = float(np.mean(step_ops.batch_widths(trainer,
                                                    FLAGS.repetitions * (FLAGS.steps + 1))))
  floors = {kind: {**step_ops.floor_parts(batch_size, prepared.num_items,
                                         config.model.embedding_dim, dtype, jit),
                   **step_ops.tower_product_parts(
                       batch_size, round(mean_width), config.model.embedding_dim,
                       config.model.num_heads, config.model.num_levels, tf.float32, jit)}
            for kind, jit in COMPILERS}
  parts = {}
  if with_parts:
    batch = next(iter(trainer._distributed("train", training=True)))  # pylint: disable=protected-access
    parts = step_parts(trainer, batch)
    cached = iter(trainer.strategy.distribute_datasets_from_function(
        lambda context: make_dataset(prepared, "train", trainer.input_config, training=True,
                                     input_context=context).take(1).cache().repeat()))
    parts["cached_input"] = lambda: trainer._train_step(cached)  # pylint: disable=protected-access
  times: Dict[str, List[float]] = collections.defaultdict(list)
  for _ in range(FLAGS.repetitions):
    times["step"].append(common.time_calls(step, FLAGS.steps))
    for kind, functions in floors.items():
      for name, function in functions.items():
        times[f"floor_{name}_{kind}"].append(common.time_calls(function, FLAGS.steps))
    for name, function in parts.items():
      times[f"step_{name}"].append(common.time_calls(function, FLAGS.steps))
  medians = {name: median_ms(values) for name, values in times.items()}
  floor_products = min(medians["floor_products_native"], medians["floor_products_xla"])
  floor_update = min(medians["floor_update_native"], medians["floor_update_xla"])
  floor = floor_products + floor_update
  strict_floor = floor_products + min(floor_update, medians["floor_update_fused_native"])
  tower_floor = min(medians["floor_tower_products_native"], medians["floor_tower_products_xla"])
  step_ms = medians.pop("step")
  return {
      "variant": variant,
      "batch_size": batch_size,
      "intra_op_threads": FLAGS.intra_op_threads,
      "inter_op_threads": FLAGS.inter_op_threads,
      "step_ms": step_ms,
      "floor_ms": floor,
      "ratio": step_ms / floor,
      "strict_floor_ms": strict_floor,
      "strict_ratio": step_ms / strict_floor,
      "batch_widths": widths,
      "mean_batch_width": mean_width,
      "tower_floor_ms": tower_floor,
      "ratio_with_tower": step_ms / (floor + tower_floor),
      "examples_per_second": 1e3 * batch_size / step_ms,
      "floor_examples_per_second": 1e3 * batch_size / floor,
      **{f"{name}_ms": value for name, value in sorted(medians.items())},
  }


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
  tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
  results: List[Dict] = [measure(int(b), variant,
                                 with_parts=FLAGS.parts and variant == FLAGS.variants[0])
                         for variant in FLAGS.variants for b in FLAGS.batch_sizes]
  for r in results:
    logging.info("%s, batch %d: step %.1f ms, floor %.1f ms, ratio %.2f (strict %.2f), "
                 "%.0f examples/s", r["variant"], r["batch_size"], r["step_ms"], r["floor_ms"],
                 r["ratio"], r["strict_ratio"], r["examples_per_second"])
  print(json.dumps(results, indent=1))
  if FLAGS.json_output:
    with open(FLAGS.json_output, "w") as out:
      json.dump(results, out)
  if FLAGS.record_as:
    common.record(FLAGS.record_as, results)


if __name__ == "__main__":
  app.run(main)
