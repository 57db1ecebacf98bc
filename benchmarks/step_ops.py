"""Standalone op sequences that the training step is timed against (benchmarks.train_step), and
the timed steps' input (`warmed_iterator`, `batch_widths`).

Flag-free, so that tests can check that what they time is the same work.
"""

import dataclasses
from typing import Callable, Dict, Iterator, List, Tuple


def floor_parts(batch_size: int, num_items: int, dim: int, dtype,
                jit_compile: bool) -> Dict[str, Callable]:
  """The unavoidable work of one step as stock-op functions: the products and the Adam update
  (Keras' Adam; `update_fused`: TensorFlow's fused Adam kernel, informative)."""
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

  moments = [tf.Variable(tf.zeros_like(table)) for _ in range(2)]

  @tf.function
  def update_fused():
    tf.raw_ops.ResourceApplyAdam(
        var=table.handle, m=moments[0].handle, v=moments[1].handle, beta1_power=0.9,
        beta2_power=0.999, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, grad=grad)
    return table[0, 0]

  return {"products": products, "update": update, "update_fused": update_fused}


def tower_product_parts(batch_size: int, length: int, dim: int, num_heads: int,
                        num_levels: int, dtype, jit_compile: bool) -> Dict[str, Callable]:
  """The matrix products of the query tower (embedding encoder, Atten-Mixer readout with its key
  and value maps folded into the queries and the pooled states, final projection), forward and
  backward, as stock ops: `{"tower_products": fn}`.

  Per step: the L level maps `[B, d] x [d, d]`; the query map `[B L, d] x [d, d]`; per head the
  key fold `[B L, d/h] x [d/h, d]`; per example the level logits `[h L, d] x [d, T]` and the
  pooled states `[h, T] x [T, d]`; per head the value fold `[B, d] x [d, d/h]`; the projection
  `[B, 2d] x [2d, d]`. Each product `y = a b` also forms `g b^T` and `a^T g`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  head = dim // num_heads

  def operands(batch_shape, m, k, n):
    return tuple(tf.random.normal(list(batch_shape) + shape)
                 for shape in ([m, k], [k, n], [m, n]))

  products = [
      operands([num_levels], batch_size, dim, dim),
      operands([], batch_size * num_levels, dim, dim),
      operands([num_heads], batch_size * num_levels, head, dim),
      operands([batch_size], num_heads * num_levels, dim, length),
      operands([batch_size], num_heads, length, dim),
      operands([num_heads], batch_size, dim, head),
      operands([], batch_size, 2 * dim, dim),
  ]

  @tf.function(jit_compile=jit_compile)
  def tower_products():
    outputs = []
    for a, b, g in products:
      a, b, g = (tf.cast(x, dtype) for x in (a, b, g))
      outputs += [tf.matmul(a, b), tf.matmul(g, b, transpose_b=True),
                  tf.matmul(a, g, transpose_a=True)]
    return outputs  # whole outputs, so that XLA computes all of them

  return {"tower_products": tower_products}


def warmed_iterator(trainer) -> Tuple[Iterator, List[int]]:
  """The trainer's training batches, after one step at every batch width the input can produce
  (`length_multiple`), so that no timed step waits for XLA to compile a new width.

  Returns:
    The iterator, positioned on the first training batch, and the widths compiled.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data.pipeline import make_dataset, trimmed_widths  # pylint: disable=g-import-not-at-top
  config = trainer.input_config
  widths = trimmed_widths(config.max_length, config.length_multiple or config.max_length)

  def cut(index, batch):
    items = batch["items"]
    # The width from a tensor, so that the batch keeps the pipeline's [batch, None] shape.
    keep = tf.minimum(tf.gather(widths, index), tf.shape(items)[1])
    return {**batch, "items": items[:, tf.shape(items)[1] - keep:]}

  def dataset_fn(context):
    full = dataclasses.replace(config, length_multiple=0)
    warm = make_dataset(trainer.prepared, "train", full, training=True,
                        input_context=context).take(len(widths)).enumerate().map(cut)
    return warm.concatenate(make_dataset(trainer.prepared, "train", config, training=True,
                                         input_context=context))

  iterator = iter(trainer.strategy.distribute_datasets_from_function(dataset_fn))
  for _ in widths:
    trainer._train_step(iterator).numpy()  # pylint: disable=protected-access
  return iterator, widths


def batch_widths(trainer, count: int) -> List[int]:
  """The widths of the first `count` training batches (the timed ones come first)."""
  from data.pipeline import make_dataset  # pylint: disable=g-import-not-at-top
  return [int(batch["items"].shape[1]) for batch in make_dataset(
      trainer.prepared, "train", trainer.input_config, training=True).take(count)]
