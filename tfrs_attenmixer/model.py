"""`SessionRetrievalModel`: the session recommender as a two-tower `tfrs.Model`.

Query tower (`QueryTower`): item ids [batch, length] -> item encoder -> item states h -> readout
s -> `z = W_m [s || h_n]` -> `~z` [batch, dim]. Candidate tower: the encoder's item table, rows
L2-normalised. Score of item i: `sigma * <~z, ~E_i>` (SPEC.md, step 6). Both towers come from one
`ModelConfig`.

A batch is `{"items": int [batch, length] (0 = padding, either side), "target": int [batch] in
1..N}`. Score matrices have N columns, column j for item j + 1, so padding is never ranked.
"""

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_attenmixer import attenmixer
from tfrs_attenmixer import catalogue_softmax
from tfrs_attenmixer import dropout as dropout_lib
from tfrs_attenmixer import encoders
from tfrs_attenmixer import losses
from tfrs_attenmixer import metrics as metrics_lib
from tfrs_attenmixer import readouts
from tfrs_attenmixer.config import ModelConfig

_ENCODERS = {
    "embedding": encoders.EmbeddingEncoder,
    "srgnn": encoders.SRGNNEncoder,
    "sgnnhn": encoders.SGNNHNEncoder,
}


def build_encoder(config: ModelConfig, num_items: int, **kwargs) -> encoders.ItemEncoder:
  """The item encoder named by `config.encoder`; `kwargs` go to the layer (name, dtype)."""
  kwargs.update(embedding_dim=config.embedding_dim, dropout=config.dropout,
                normalize=config.normalize,
                normalize_after_dropout=config.normalize_after_dropout)
  if config.encoder != "embedding":
    kwargs["steps"] = config.gnn_steps
  return _ENCODERS[config.encoder](num_items, **kwargs)


def build_readout(config: ModelConfig, **kwargs) -> readouts.Readout:
  """The readout named by `config.readout`; `kwargs` go to the layer (name, dtype)."""
  if config.readout == "attenmixer":
    return attenmixer.AttenMixer(**config.layer_arguments(), **kwargs)
  baselines = {
      "last_item": readouts.LastItemReadout,
      "mean": readouts.MeanReadout,
      "srgnn_attention": readouts.SRGNNAttentionReadout,
  }
  return baselines[config.readout](**kwargs)


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class QueryTower(tf.keras.layers.Layer):
  """Session vectors: item ids [batch, length] -> `~z` [batch, dim] (float32).

  `z = W_m [s || h_n]` with `s` the readout of the encoded items and `h_n` the most recent item's
  state; `z` is L2-normalised when `config.normalize`.
  """

  def __init__(self, config: Union[ModelConfig, Mapping[str, Any]], num_items: int, **kwargs):
    """Builds the tower (weights included) from a `ModelConfig` (or its dict) and N."""
    super().__init__(**kwargs)
    self.config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
    self.num_items = num_items
    dtype = self.dtype_policy
    self.encoder = build_encoder(self.config, num_items, dtype=dtype, name="encoder")
    self.encoder.build(tf.TensorShape([None, None]))
    self.readout = build_readout(self.config, dtype=dtype, name="readout")
    self.projection = tf.keras.layers.Dense(self.config.embedding_dim, dtype=dtype,
                                            name="session_projection")

  def call(self, items: tf.Tensor, training: Optional[bool] = None) -> tf.Tensor:
    """[batch, length] int ids -> [batch, dim]."""
    mask = tf.not_equal(items, 0)
    states = self.encoder(items, training=training)
    summary = self.readout(states, mask=mask, training=training)
    z = self.projection(tf.concat([summary, readouts.gather_last(states, mask)], axis=-1))
    z = tf.cast(z, tf.float32)
    return tf.math.l2_normalize(z, axis=-1) if self.config.normalize else z

  def get_config(self) -> Dict[str, Any]:
    return {**super().get_config(), "config": self.config.to_dict(), "num_items": self.num_items}


def inverse_norms(rows: tf.Tensor) -> tf.Tensor:
  """`1 / |row|` [rows] of float [rows, dim], as `tf.math.l2_normalize` computes it."""
  return tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(rows), axis=-1), 1e-12))


class _FunctionCache:
  """Functions built once per key; a plain object, so Keras does not track (or save) them."""

  def __init__(self):
    self._functions = {}

  def get(self, key, build):
    if key not in self._functions:
      self._functions[key] = build()
    return self._functions[key]


class SessionRetrievalModel(tfrs.Model):
  """Atten-Mixer (or a baseline, per `ModelConfig`) as a TFRS retrieval model.

  `compute_loss(batch, training)` returns the configured loss in training (full softmax over the
  catalogue or sampled softmax) and the full-softmax loss in evaluation, where it also updates the
  ranking metrics (`hr_at_K`, `mrr_at_K`, `ndcg_at_K`, K = 5, 10, 20) over the whole catalogue.
  Training scores are one matmul of the session vectors against the normalised table in the
  compute dtype of the global policy when the model is built (`score_dtype`: bfloat16 under
  `mixed_bfloat16`, where the CPU's bfloat16 products are fastest); the query tower runs in
  `tower_dtype` (float32 by default: XLA's CPU dot, which runs it, has no fast bfloat16 path);
  evaluation scores are float32 (no ties from bfloat16 rounding).

  Call `create_weights(max_length, seed)` before training: it creates the weights and draws the
  default "uniform" initialisation (training without it is an error unless
  `config.initialization` is "keras").
  """

  def __init__(self,
               config: ModelConfig,
               num_items: int,
               item_counts: Optional[Sequence[float]] = None,
               tower_dtype: Optional[str] = "float32",
               **kwargs):
    """Initialises the model.

    Args:
      config: the model options.
      num_items: N; item ids are 1..N, 0 is padding.
      item_counts: optional [N + 1] target frequencies in the training data, used only by the
        sampled softmax's logQ correction (uniform when absent).
      tower_dtype: the dtype policy of the query tower ("float32" by default, whatever the
        global policy; None follows the global policy).
      **kwargs: `tf.keras.Model` arguments.
    """
    super().__init__(**kwargs)
    self.config = config
    self._weights_drawn = config.initialization != "uniform"  # else by create_weights
    self.num_items = num_items
    # Under a mixed policy only the catalogue scores use its compute dtype (see the class doc).
    self.score_dtype = tf.as_dtype(tf.keras.mixed_precision.global_policy().compute_dtype)
    self.query_tower = QueryTower(config, num_items, name="query_tower", dtype=tower_dtype)
    # float32: evaluation scores the unrounded table even under mixed precision.
    self.table_dropout = dropout_lib.CounterDropout(config.table_dropout, dtype="float32")
    self.sampled_loss = None
    if config.loss == "sampled_softmax":
      self.sampled_loss = losses.SampledSoftmaxLoss(
          num_items, config.scale, in_batch_negatives=config.in_batch_negatives,
          num_uniform_negatives=config.num_uniform_negatives, item_counts=item_counts)
    self.ranking_metrics = metrics_lib.ranking_metrics()
    # jit_compile -> the query tower as a tf.function (training); untracked, never saved.
    self._compiled_towers = _FunctionCache()

  def create_weights(self, max_length: int, seed: int = 0) -> None:
    """Creates every weight and initialises it as `config.initialization` says.

    The weights are created by one call of the query tower on a zero batch [1, max_length].
    "uniform" then redraws each trainable weight from U(-1/sqrt(d), 1/sqrt(d)), biases and
    LayerNorm parameters included (the `reset_parameters` of the authors' and SR-GNN's code),
    from stateless draws of `seed`: every replica and worker gets the same values.
    """
    self.query_tower(tf.zeros([1, max_length], tf.int32))
    if self.config.initialization == "uniform":
      bound = 1.0 / math.sqrt(self.config.embedding_dim)
      for index, variable in enumerate(self.trainable_variables):
        variable.assign(tf.random.stateless_uniform(
            variable.shape, seed=[seed, index], minval=-bound, maxval=bound,
            dtype=variable.dtype))
    self._weights_drawn = True

  @property
  def encoder(self) -> encoders.ItemEncoder:
    """The item encoder, owner of the shared item table."""
    return self.query_tower.encoder

  def call(self, features: Union[tf.Tensor, Mapping[str, tf.Tensor]],
           training: Optional[bool] = None) -> tf.Tensor:
    """Session vectors [batch, dim] of `features["items"]` (or of an ids tensor)."""
    items = features["items"] if isinstance(features, Mapping) else features
    return self.query_tower(items, training=training)

  def candidate_embeddings(self) -> tf.Tensor:
    """The candidate tower: float32 [N, dim], row r is item r + 1 (padding excluded).

    Rows are L2-normalised when `config.normalize`; score = `scale * query . row`.
    """
    return self._item_vectors(self.encoder.item_table[1:], training=False)

  def candidate_ids(self) -> tf.Tensor:
    """int32 [N]: the item id of each row of `candidate_embeddings()` (1..N)."""
    return tf.range(1, self.num_items + 1, dtype=tf.int32)

  def query_model(self) -> tf.keras.Model:
    """The query tower as a Keras model: int32 `items` [batch, length] -> float32 [batch, dim]."""
    items = tf.keras.Input(shape=[None], dtype=tf.int32, name="items")
    return tf.keras.Model(items, self.query_tower(items), name="query_model")

  def compute_loss(self, inputs: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    """Loss of a batch `{"items", "target"}`; evaluation also updates the ranking metrics."""
    if training and not self._weights_drawn:
      raise RuntimeError(
          "SessionRetrievalModel: config.initialization='uniform' draws the weights in "
          "create_weights(max_length, seed); call it before training (or use "
          "initialization='keras', each layer's own initialisers).")
    queries = self.query_tower(inputs["items"], training=training)
    targets = tf.cast(inputs["target"], tf.int32)
    if training and self.sampled_loss is not None:
      ids = self.sampled_loss.candidate_ids(targets)
      candidates = self._item_vectors(tf.gather(self.encoder.item_table, ids), training=True)
      return self.sampled_loss(queries, candidates, ids)

    logits = self.catalogue_logits(queries, training=training)
    loss = losses.full_softmax_loss(logits, targets)
    if not training:
      ranks = metrics_lib.target_ranks(logits, targets)
      updates = [metric.update_state(ranks) for metric in self.ranking_metrics]
      with tf.control_dependencies(updates):
        loss = tf.identity(loss)
    return loss

  def full_softmax_gradients(self, inputs: Mapping[str, tf.Tensor],
                             variables: Sequence[tf.Variable], loss_weight: float = 1.0,
                             l2: float = 0.0, jit_compile: bool = True
                            ) -> Tuple[tf.Tensor, List[tf.Tensor]]:
    """The training loss of a batch and the gradients of `loss_weight * loss + l2 / 2 |w|^2`.

    The same values as differentiating `compute_loss(inputs, training=True)` with the full
    softmax (`catalogue_softmax` explains how they are computed faster); the table's gradient is
    dense.

    Args:
      inputs: `{"items": int [B, length], "target": int [B]}`.
      variables: the trainable variables to differentiate, the item table among them.
      loss_weight: factor of the loss (e.g. 1 / replicas).
      l2: weight decay, added to each gradient as `l2 * variable`.
      jit_compile: compile the query tower's forward and backward pass with XLA.

    Returns:
      The loss (a scalar, unweighted) and one float32 gradient per variable.
    """
    if self.config.loss != "full_softmax":
      raise ValueError("full_softmax_gradients needs config.loss='full_softmax'.")
    if not self._weights_drawn:
      raise RuntimeError("SessionRetrievalModel: call create_weights() before training.")
    table = self.encoder.item_table
    if not any(v is table for v in variables):
      raise ValueError("full_softmax_gradients: `variables` must include the item table.")
    # The table's value, not the variable: a tf.function traced (inside another function) with
    # one model's variable would otherwise be reused for another model's variable.
    table_value = tf.convert_to_tensor(table)
    tower = self._compiled_towers.get(jit_compile, lambda: tf.function(
        lambda items: self.query_tower(items, training=True), jit_compile=jit_compile))
    targets = tf.cast(inputs["target"], tf.int32)
    rate = self.config.table_dropout
    keys = self.table_dropout.draw_keys() if rate else tf.zeros([2], tf.int32)
    dtype = self.score_dtype
    options = dict(rate=rate, scale=self.config.scale, normalize=self.config.normalize)
    rows, factors, keep = catalogue_softmax.candidate_rows(table_value, keys, dtype=dtype,
                                                            **options)
    with tf.GradientTape() as tape:
      queries = tower(inputs["items"])
    batch = tf.shape(targets)[0]
    # d loss / d (one example's cross-entropy), whatever compute_average_loss divides by.
    example_weight = (loss_weight * tf.nn.compute_average_loss(tf.ones([batch])) /
                      tf.cast(batch, tf.float32))
    per_example, grad_queries, grad_rows, target_rows, probabilities, logits = (
        catalogue_softmax.softmax_products(
            queries, rows, targets, example_weight,
            bounded=self.config.normalize and (self.config.scale / (1.0 - rate) <=
                                               catalogue_softmax.BOUNDED_LOGIT)))
    # The normalisation's projections from the [B, N] scores when that is the smaller sum.
    static_batch = targets.shape[0]
    scores = ((probabilities, logits, example_weight)
              if static_batch is not None and static_batch < table.shape[1] else None)
    loss = tf.nn.compute_average_loss(per_example)
    tower_grads = tape.gradient(queries, list(variables), output_gradients=grad_queries,
                                unconnected_gradients=tf.UnconnectedGradients.ZERO)
    grads = []
    for variable, grad in zip(variables, tower_grads):
      if variable is table:
        if isinstance(grad, tf.IndexedSlices):
          lookup_ids, lookup_values = grad.indices, grad.values
        else:
          lookup_ids, lookup_values = tf.range(tf.shape(table)[0]), grad
        grads.append(catalogue_softmax.table_gradient(
            table_value, keys, factors=factors, keep=keep, grad_rows=grad_rows,
            row_ids=targets - 1, row_values=target_rows, lookup_ids=tf.cast(lookup_ids, tf.int32),
            lookup_values=lookup_values, l2=l2, scores=scores, **options))
      else:
        grad = tf.convert_to_tensor(grad)
        grads.append(grad + l2 * variable if l2 else grad)
    return loss, grads

  def catalogue_logits(self, queries: tf.Tensor, training: bool = False) -> tf.Tensor:
    """Scores float32 [batch, N] of session vectors [batch, dim] against the whole catalogue.

    Equal to `scale * queries @ candidate_embeddings().T` (with table dropout in training), but
    computed the fast way: the product runs over the unsliced, unnormalised table [N + 1, dim]
    (slicing off the padding row before the product made XLA copy the table) and the row norms
    are applied to the [batch, N + 1] product instead of the [N + 1, dim] table. Dropout commutes
    with the row scaling, so `dropout(E / |E|) = dropout(E) / |E|` with the same mask. Training
    products run in the compute dtype (bfloat16 under mixed precision); evaluation in float32,
    so that ranks have no ties from rounding.
    """
    table = tf.cast(self.encoder.item_table, tf.float32)
    dtype = self.score_dtype if training else tf.float32
    rows = self.table_dropout(table, training=training)
    logits = self.config.scale * tf.cast(
        tf.matmul(tf.cast(queries, dtype), tf.cast(rows, dtype), transpose_b=True), tf.float32)
    if self.config.normalize:
      logits *= inverse_norms(table)
    return logits[:, 1:]

  def _item_vectors(self, rows: tf.Tensor, training: bool) -> tf.Tensor:
    """Candidate vectors from item table rows: normalised (per config), table dropout."""
    rows = tf.cast(rows, tf.float32)
    if self.config.normalize:
      rows *= inverse_norms(rows)[:, None]
    return self.table_dropout(rows, training=training)
