"""SR-GNN's session graph, built inside the TensorFlow graph from padded item ids.

A session `v1..vn` becomes a directed graph with one node per distinct item and an edge `u -> v`
whenever `v` is clicked right after `u` (repeated transitions count once). Nodes are numbered in
increasing item id, as `np.unique` does in SR-GNN's data loader. The in- and out-adjacency matrices
are normalised by node degree:

  adjacency_in[v, u]  = A[u, v] / in_degree(v)     (messages from predecessors)
  adjacency_out[u, v] = A[u, v] / out_degree(u)    (messages from successors)

so `adjacency_in @ x` averages `x` over each node's predecessors; SR-GNN's concatenated matrix is
`[adjacency_in, adjacency_out]` along the last axis. Rows of nodes without such edges are zero.

Everything is vectorised over the batch with `[batch, length, length]` comparisons (no sorting, no
Python per session), so it runs under `tf.function`, XLA and distribution strategies. Padding
(id 0) may sit on either side; the valid items of a row must be contiguous.
"""

from typing import NamedTuple

import tensorflow as tf


class SessionGraph(NamedTuple):
  """Session graphs of a padded batch; `nodes` has `length` slots, the first `num_nodes` used.

  Attributes:
    nodes: int [batch, length]: item id of each node, 0 for unused slots.
    node_mask: bool [batch, length]: which node slots are used.
    alias: int32 [batch, length]: node index of each position (0 at padding positions).
    adjacency_in: float32 [batch, length, length]: degree-normalised incoming adjacency.
    adjacency_out: float32 [batch, length, length]: degree-normalised outgoing adjacency.
  """
  nodes: tf.Tensor
  node_mask: tf.Tensor
  alias: tf.Tensor
  adjacency_in: tf.Tensor
  adjacency_out: tf.Tensor


def session_graph(items: tf.Tensor) -> SessionGraph:
  """Builds the session graphs of a batch.

  Args:
    items: int [batch, length] item ids, 0 = padding.

  Returns:
    The `SessionGraph` of every row.
  """
  items = tf.convert_to_tensor(items)
  valid = tf.not_equal(items, 0)
  length = tf.shape(items)[1]

  # same[b, i, j]: positions i and j hold the same valid item.
  same = (tf.equal(items[:, :, None], items[:, None, :]) &
          valid[:, :, None] & valid[:, None, :])
  # A position is a node's representative if no earlier position holds the same item.
  earlier = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0) & ~tf.eye(
      length, dtype=tf.bool)
  first = valid & ~tf.reduce_any(same & earlier[None], axis=2)
  # Node index = number of distinct items with a smaller id.
  smaller = first[:, None, :] & (items[:, None, :] < items[:, :, None])
  alias = tf.where(valid, tf.reduce_sum(tf.cast(smaller, tf.int32), axis=2), 0)

  # assignment[b, i, k] = 1 if position i maps to node k.
  assignment = tf.one_hot(alias, length, dtype=tf.float32) * tf.cast(valid, tf.float32)[..., None]
  num_nodes = tf.reduce_sum(tf.cast(first, tf.int32), axis=1)
  node_mask = tf.range(length)[None, :] < num_nodes[:, None]
  nodes = tf.reduce_max(
      tf.where(assignment > 0, items[:, :, None], tf.zeros_like(items)[..., None]), axis=1)

  # Transition counts between nodes from consecutive valid positions, then 0/1 edges.
  step = tf.cast(valid[:, :-1] & valid[:, 1:], tf.float32)[..., None]
  counts = tf.matmul(assignment[:, :-1] * step, assignment[:, 1:], transpose_a=True)
  edges = tf.minimum(counts, 1.0)
  in_degree = tf.maximum(tf.reduce_sum(edges, axis=1), 1.0)
  out_degree = tf.maximum(tf.reduce_sum(edges, axis=2), 1.0)
  adjacency_in = tf.linalg.matrix_transpose(edges) / in_degree[:, :, None]
  adjacency_out = edges / out_degree[:, :, None]
  return SessionGraph(nodes, node_mask, alias, adjacency_in, adjacency_out)
