"""`SessionRetrievalModel`: the session recommender as a two-tower `tfrs.Model`.

Query tower (`QueryTower`): item ids [batch, length] -> item encoder -> item states h -> readout
s -> `z = W_m [s || h_n]` -> `~z` [batch, dim]. Candidate tower: the encoder's item table, rows
L2-normalised. Score of item i: `sigma * <~z, ~E_i>` (SPEC.md, step 6). Both towers come from one
`ModelConfig`.

A batch is `{"items": int [batch, length] (0 = padding, either side), "target": int [batch] in
1..N}`. Score matrices have N columns, column j for item j + 1, so padding is never ranked.
"""

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_attenmixer import attenmixer
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
    return attenmixer.AttenMixer(
        num_levels=config.num_levels,
        level_aggregation=config.level_aggregation,
        level_selection=config.level_selection,
        num_heads=config.num_heads,
        head_split=config.head_split,
        attention_scoring=config.attention_scoring,
        mask_level_attention=config.mask_level_attention,
        pooling=config.pooling,
        lp_norm=config.lp_norm,
        pooled_normalization=config.pooled_normalization,
        normalize_queries_over_levels=config.normalize_queries_over_levels,
        dropout=config.attention_dropout,
        layer_norm=config.layer_norm,
        **kwargs)
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


class SessionRetrievalModel(tfrs.Model):
  """Atten-Mixer (or a baseline, per `ModelConfig`) as a TFRS retrieval model.

  `compute_loss(batch, training)` returns the configured loss in training (full softmax over the
  catalogue or sampled softmax) and the full-softmax loss in evaluation, where it also updates the
  ranking metrics (`hr_at_K`, `mrr_at_K`, `ndcg_at_K`, K = 5, 10, 20) over the whole catalogue.
  Training scores are one matmul of the session vectors against the normalised table in the
  compute dtype; evaluation scores are float32 (no ties from bfloat16 rounding).

  Call `create_weights(max_length, seed)` before training: it creates the weights and draws the
  default "uniform" initialisation (training without it is an error unless
  `config.initialization` is "keras").
  """

  def __init__(self,
               config: ModelConfig,
               num_items: int,
               item_counts: Optional[Sequence[float]] = None,
               **kwargs):
    """Initialises the model.

    Args:
      config: the model options.
      num_items: N; item ids are 1..N, 0 is padding.
      item_counts: optional [N + 1] target frequencies in the training data, used only by the
        sampled softmax's logQ correction (uniform when absent).
      **kwargs: `tf.keras.Model` arguments.
    """
    super().__init__(**kwargs)
    self.config = config
    self._weights_drawn = config.initialization != "uniform"  # else by create_weights
    self.num_items = num_items
    self.query_tower = QueryTower(config, num_items, name="query_tower")
    # float32: evaluation scores the unrounded table even under mixed precision.
    self.table_dropout = tf.keras.layers.Dropout(config.table_dropout, dtype="float32")
    self.sampled_loss = None
    if config.loss == "sampled_softmax":
      self.sampled_loss = losses.SampledSoftmaxLoss(
          num_items, config.scale, in_batch_negatives=config.in_batch_negatives,
          num_uniform_negatives=config.num_uniform_negatives, item_counts=item_counts)
    self.ranking_metrics = metrics_lib.ranking_metrics()

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
    dtype = self.query_tower.compute_dtype if training else tf.float32
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
