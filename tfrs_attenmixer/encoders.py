"""Item encoders: item ids [batch, length] -> item states [batch, length, dim].

Every encoder owns the item table `item_table` [num_items + 1, dim] (row 0 = padding), which the
retrieval model reuses as its candidate tower. An encoder's Keras mask is `items != 0`, and its
states are zero at padding positions (either side of a row, the valid items contiguous).

- `EmbeddingEncoder`: `h_j = E[v_j]`, L2-normalised (NISER), dropout in training (the paper's
  default: Atten-Mixer needs no graph propagation).
- `SRGNNEncoder`: SR-GNN's gated graph network over the session graph (`session_graph.py`).
- `SGNNHNEncoder`: SGNN-HN's star graph network with a highway connection.

The graph encoders embed the distinct items of each session as nodes (as above), propagate over the
graph, gather the node states back to positions and L2-normalise them.
"""

import math
from typing import Any, Dict, Optional

import tensorflow as tf

from tfrs_attenmixer import dropout as dropout_lib
from tfrs_attenmixer import session_graph as graph_lib
from tfrs_attenmixer.config import ModelConfig

# Logit of padding nodes in the star node's softmax.
_MASKED_LOGIT = -1e9


class ItemEncoder(tf.keras.layers.Layer):
  """Base of the encoders: the shared item table, the item embedding step and the mask."""

  def __init__(self,
               num_items: int,
               embedding_dim: int = ModelConfig.embedding_dim,
               dropout: float = ModelConfig.dropout,
               normalize: bool = ModelConfig.normalize,
               normalize_after_dropout: bool = ModelConfig.normalize_after_dropout,
               **kwargs):
    """Initialises the encoder.

    Args:
      num_items: N, the catalogue size; item ids are 1..N and the table has N + 1 rows.
      embedding_dim: d, the size of the embeddings and of the output states.
      dropout: dropout rate on the embedded items in training.
      normalize: L2-normalise the embeddings and the output states.
      normalize_after_dropout: with `normalize`, L2-normalise the embeddings again after their
        dropout (the authors' code), so that they are unit vectors in training too.
      **kwargs: base layer arguments.
    """
    super().__init__(**kwargs)
    self.num_items = num_items
    self.embedding_dim = embedding_dim
    self.dropout = dropout
    self.normalize = normalize
    self.normalize_after_dropout = normalize_after_dropout
    self.supports_masking = True
    # Positions (nodes) are indexed from the session's end, so that a batch cut to its longest
    # session draws the same masks (data.pipeline.trim_padding).
    self.state_dropout = dropout_lib.CounterDropout(dropout, aligned_axis=1,
                                                    dtype=self.dtype_policy)

  def build(self, input_shape=None):
    bound = 1.0 / math.sqrt(self.embedding_dim)  # SR-GNN's initialisation
    self._item_table = self.add_weight(
        name="item_table",
        shape=[self.num_items + 1, self.embedding_dim],
        initializer=tf.keras.initializers.RandomUniform(-bound, bound))
    super().build(input_shape)

  @property
  def item_table(self) -> tf.Variable:
    """The item embedding table [num_items + 1, dim]; row 0 is padding."""
    return self._item_table

  def compute_mask(self, items, mask=None):
    return tf.not_equal(items, 0)

  def embed(self, items: tf.Tensor, training: Optional[bool]) -> tf.Tensor:
    """Looks up, normalises and drops out items: [batch, n] -> [batch, n, dim]."""
    embeddings = tf.gather(self._item_table, items)
    if self.normalize:
      embeddings = tf.math.l2_normalize(embeddings, axis=-1)
    embeddings = self.state_dropout(embeddings, training=training)
    if self.normalize and self.normalize_after_dropout:  # A no-op on unit vectors (evaluation).
      embeddings = tf.math.l2_normalize(embeddings, axis=-1)
    return embeddings

  def call(self, items: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    """[batch, length] int ids -> [batch, length, dim], zeros at padding."""
    valid = tf.cast(tf.not_equal(items, 0), self.compute_dtype)[..., None]
    return self.encode(items, training) * valid

  def encode(self, items: tf.Tensor, training: Optional[bool]) -> tf.Tensor:
    """The item states [batch, length, dim]; padding positions are zeroed by `call`."""
    raise NotImplementedError

  def get_config(self) -> Dict[str, Any]:
    return {
        **super().get_config(),
        "num_items": self.num_items,
        "embedding_dim": self.embedding_dim,
        "dropout": self.dropout,
        "normalize": self.normalize,
        "normalize_after_dropout": self.normalize_after_dropout,
    }


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class EmbeddingEncoder(ItemEncoder):
  """Embedding lookup, L2 normalisation and dropout: the default item encoder."""

  def encode(self, items, training):
    return self.embed(items, training)


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class GatedGraphCell(tf.keras.layers.Layer):
  """One SR-GNN propagation step (Wu et al., AAAI 2019, eq. 1-5) over node states [batch, n, d].

    a_in  = adjacency_in  @ (x W_in  + b_in)  + b_iah
    a_out = adjacency_out @ (x W_out + b_out) + b_oah
    x'    = GRU([a_in || a_out], x)

  The GRU update is Keras' `GRUCell` with `reset_after=True`, which is SR-GNN's gating exactly.
  """

  def build(self, input_shape):
    dim, dtype = input_shape[-1], self.dtype_policy
    self.incoming = tf.keras.layers.Dense(dim, dtype=dtype, name="incoming")
    self.outgoing = tf.keras.layers.Dense(dim, dtype=dtype, name="outgoing")
    self.incoming_bias = self.add_weight(name="incoming_bias", shape=[dim], initializer="zeros")
    self.outgoing_bias = self.add_weight(name="outgoing_bias", shape=[dim], initializer="zeros")
    self.gru = tf.keras.layers.GRUCell(dim, reset_after=True, dtype=dtype, name="gru")
    super().build(input_shape)

  def call(self, nodes: tf.Tensor, adjacency_in: tf.Tensor,
           adjacency_out: tf.Tensor) -> tf.Tensor:
    """nodes [batch, n, d], adjacencies [batch, n, n] -> new node states [batch, n, d]."""
    messages = tf.concat([
        tf.matmul(tf.cast(adjacency_in, nodes.dtype), self.incoming(nodes)) + self.incoming_bias,
        tf.matmul(tf.cast(adjacency_out, nodes.dtype), self.outgoing(nodes)) + self.outgoing_bias,
    ], axis=-1)
    dim = nodes.shape[-1]
    updated, _ = self.gru(tf.reshape(messages, [-1, 2 * dim]), [tf.reshape(nodes, [-1, dim])])
    return tf.reshape(updated, tf.shape(nodes))


class SessionGraphEncoder(ItemEncoder):
  """Base of the graph encoders: session graph, node embedding, `propagate`, gather, normalise."""

  def __init__(self, num_items: int, steps: int = ModelConfig.gnn_steps, **kwargs):
    """Initialises the encoder; `steps` propagation steps, other arguments as `ItemEncoder`."""
    super().__init__(num_items, **kwargs)
    self.steps = steps
    self.cell = GatedGraphCell(dtype=self.dtype_policy, name="gated_graph_cell")

  def encode(self, items, training):
    graph = graph_lib.session_graph(items)
    node_mask = tf.cast(graph.node_mask, self.compute_dtype)[..., None]
    nodes = self.propagate(self.embed(graph.nodes, training) * node_mask, graph)
    states = tf.gather(nodes, graph.alias, axis=1, batch_dims=1)
    return tf.math.l2_normalize(states, axis=-1) if self.normalize else states

  def propagate(self, nodes: tf.Tensor, graph: graph_lib.SessionGraph) -> tf.Tensor:
    """Node states [batch, n, d] after message passing over `graph`."""
    raise NotImplementedError

  def get_config(self) -> Dict[str, Any]:
    return {**super().get_config(), "steps": self.steps}


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class SRGNNEncoder(SessionGraphEncoder):
  """SR-GNN: `steps` applications of one shared `GatedGraphCell`."""

  def propagate(self, nodes, graph):
    for _ in range(self.steps):
      nodes = self.cell(nodes, graph.adjacency_in, graph.adjacency_out)
    return nodes


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class SGNNHNEncoder(SessionGraphEncoder):
  """SGNN-HN (Pan et al., CIKM 2020): star graph network with a highway connection.

  The star node starts as the mean of the session's nodes. Each step updates the items with the
  `GatedGraphCell`, gates the star into every item, then re-reads the star from the items:

    alpha_i = sigmoid((W_q1 x_i) . (W_k1 s) / sqrt(d)),   x_i <- (1 - alpha_i) x_i + alpha_i s
    beta    = softmax_i((W_q2 s) . (W_k2 x_i) / sqrt(d)),  s <- sum_i beta_i x_i

  Finally the highway `g = sigmoid(W_g [x^0 || x]); x <- g x^0 + (1 - g) x` mixes the initial and
  the propagated states. Padding nodes are excluded from the mean and the softmax. Only item states
  leave the encoder (the readouts do not use the star), so the star's update after the last step
  is skipped: with one step, `W_q2` and `W_k2` are never built.
  """

  def __init__(self, num_items: int, **kwargs):
    super().__init__(num_items, **kwargs)
    def dense(name, **kwargs):
      return tf.keras.layers.Dense(self.embedding_dim, dtype=self.dtype_policy, name=name,
                                   **kwargs)
    self.item_gate_query = dense("item_gate_query")
    self.star_gate_key = dense("star_gate_key")
    self.star_read_query = dense("star_read_query")
    self.item_read_key = dense("item_read_key")
    self.highway = dense("highway", activation="sigmoid")

  def propagate(self, nodes, graph):
    mask = graph.node_mask
    weights = tf.cast(mask, nodes.dtype)[..., None]
    star = tf.math.divide_no_nan(tf.reduce_sum(nodes * weights, axis=1),
                                 tf.reduce_sum(weights, axis=1))
    scale = 1.0 / math.sqrt(self.embedding_dim)
    initial = nodes
    for step in range(self.steps):
      nodes = self.cell(nodes, graph.adjacency_in, graph.adjacency_out)
      alpha = tf.sigmoid(scale * tf.reduce_sum(
          self.item_gate_query(nodes) * self.star_gate_key(star)[:, None], axis=-1, keepdims=True))
      nodes = (1.0 - alpha) * nodes + alpha * star[:, None]
      if step + 1 < self.steps:  # the star is not read out, so its last update would be dead
        logits = scale * tf.reduce_sum(
            self.item_read_key(nodes) * self.star_read_query(star)[:, None], axis=-1)
        beta = tf.nn.softmax(tf.where(mask, logits, _MASKED_LOGIT), axis=-1)
        star = tf.reduce_sum(beta[..., None] * nodes, axis=1)
    gate = self.highway(tf.concat([initial, nodes], axis=-1))
    return gate * initial + (1.0 - gate) * nodes
