"""Standalone op sequences that the training step is timed against (benchmarks.train_step).

Flag-free, so that tests can check that what they time is the same work.
"""

from typing import Callable, Dict


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


def lookup_gradient_parts(items, num_items: int, dim: int,
                          jit_compile: bool) -> Dict[str, Callable]:
  """The item table's gradient when the table is looked up by `items` [B, L] and multiplied.

  `dense`: TensorFlow's way, the lookup's `IndexedSlices` gradient converted to a dense [N, d]
  tensor and added to the product's. `scatter`: the lookup's gradient [B, L, d] scattered into
  the product's dense gradient, no second [N, d] tensor. Both return the same gradient.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  table = tf.Variable(tf.random.normal([num_items, dim]), name="table")
  items = tf.convert_to_tensor(items)
  queries = tf.random.normal([items.shape[0], dim])
  lookup_upstream = tf.random.normal(items.shape + [dim])
  score_upstream = tf.random.normal([items.shape[0], num_items])

  def loss_of(embeddings, rows):
    return (tf.reduce_sum(embeddings * lookup_upstream) +
            tf.reduce_sum(tf.matmul(queries, rows, transpose_b=True) * score_upstream))

  @tf.function(jit_compile=jit_compile)
  def dense():
    with tf.GradientTape() as tape:
      loss = loss_of(tf.gather(table, items), table)
    return tf.convert_to_tensor(tape.gradient(loss, table))

  @tf.function(jit_compile=jit_compile)
  def scatter():
    with tf.GradientTape() as tape:
      embeddings = tf.gather(tf.stop_gradient(table), items)
      tape.watch(embeddings)
      loss = loss_of(embeddings, table)
    grad_embeddings, grad_table = tape.gradient(loss, [embeddings, table])
    return tf.tensor_scatter_nd_add(grad_table, tf.reshape(items, [-1, 1]),
                                    tf.reshape(grad_embeddings, [-1, dim]))

  return {"dense": dense, "scatter": scatter}
