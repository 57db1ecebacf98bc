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
beyond the floor goes. Two more comparisons are made for the first variant:

- `step_cached_input_ms`: the same step fed one batch cached in memory instead of the input
  pipeline, the bound that any prefetch or parallelism setting of the pipeline could reach;
- `lookup_gradient_*_ms`: the gradient of the item table when it is both looked up (the input
  items, `[B, L]`) and multiplied (the scores), as TensorFlow forms it (the lookup's sparse
  gradient made dense, then added) against a scatter of the lookup's gradient into the dense
  gradient of the product, with the real shapes and batch of the step.

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
  iterator = iter(trainer._distributed("train", training=True))  # pylint: disable=protected-access
  step = lambda: trainer._train_step(iterator)  # pylint: disable=protected-access
  dtype = tf.bfloat16 if config.train.mixed_precision == "bfloat16" else tf.float32
  floors = {kind: step_ops.floor_parts(batch_size, prepared.num_items,
                                       config.model.embedding_dim, dtype, jit)
            for kind, jit in COMPILERS}
  parts = {}
  if with_parts:
    batch = next(iter(trainer._distributed("train", training=True)))  # pylint: disable=protected-access
    parts = step_parts(trainer, batch)
    cached = iter(trainer.strategy.distribute_datasets_from_function(
        lambda context: make_dataset(prepared, "train", trainer.input_config, training=True,
                                     input_context=context).take(1).cache().repeat()))
    parts["cached_input"] = lambda: trainer._train_step(cached)  # pylint: disable=protected-access
    for kind, jit in COMPILERS:
      for name, function in step_ops.lookup_gradient_parts(
          batch["items"], prepared.num_items + 1, config.model.embedding_dim, jit).items():
        parts[f"lookup_gradient_{name}_{kind}"] = function
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
  step_ms = medians.pop("step")
  return {
      "variant": variant,
      "batch_size": batch_size,
      "intra_op_threads": FLAGS.intra_op_threads,
      "inter_op_threads": FLAGS.inter_op_threads,
      "step_ms": step_ms,
      "floor_ms": floor,
      "ratio": step_ms / floor,
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
    logging.info("%s, batch %d: step %.1f ms, floor %.1f ms, ratio %.2f, %.0f examples/s",
                 r["variant"], r["batch_size"], r["step_ms"], r["floor_ms"], r["ratio"],
                 r["examples_per_second"])
  print(json.dumps(results, indent=1))
  if FLAGS.json_output:
    with open(FLAGS.json_output, "w") as out:
      json.dump(results, out)
  if FLAGS.record_as:
    common.record(FLAGS.record_as, results)


if __name__ == "__main__":
  app.run(main)
