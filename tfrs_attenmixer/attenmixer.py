"""`AttenMixer`: the multi-level, multi-head attention readout of Atten-Mixer (WSDM 2023).

Given normalised item states `h_1..h_n` of a session, `AttenMixer` computes (SPEC.md, steps 2-5):

1. Level queries. Level `l = 1..L` summarises `l` items (by default the most recent ones,
   "inherent priority"): `Q_l = W_l(agg(h_n, ..., h_{n-l+1}))` with `agg` a sum ("deep sets",
   local invariance) or an ordered concatenation. Positions outside the session count as zero
   vectors, so `L` may exceed the session length.
2. Per head `h`, one attention map over positions per level:
   `alpha_h[l] = softmax_j((Q_l W_h^Q)(h_j W_h^K)^T / sqrt(d_h))` over the valid positions `j`
   (`attention_temperature="model_dim"`: `/ sqrt(d)`, the paper's Eq. 7).
3. Lp pooling of the `L` maps of a head per position, `a_h[j] = (sum_l alpha_h[l, j]^p)^(1/p)`,
   then renormalised over the valid positions.
4. Readout `s_h = sum_j a_h[j] (h_j W_h^V)`; the heads are concatenated, then LayerNorm (and,
   with `normalize_readout`, L2-normalised: the paper's Eq. 4 `~s`).

With `head_split="transpose"` the key and value maps are applied to the L queries and the pooled
states instead of every position (`(Q W_h^Q)(h_j W_h^K)^T = (W_h^K (Q W_h^Q)^T)^T h_j^T`, and
likewise for the values): the same outputs up to rounding, with a tenth of the products.

The paper and the authors' code differ in places; each difference is an option
(`tfrs_attenmixer.config.AttenMixerOptions`). With the default options the output does not depend on the amount or
side of padding.
"""

import math
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from tfrs_attenmixer import config as config_lib
from tfrs_attenmixer import dropout as dropout_lib
from tfrs_attenmixer import readouts

Options = config_lib.AttenMixerOptions

# Logit of padding positions in masked softmaxes (finite, so an empty row gives no NaN).
_MASKED_LOGIT = -1e9


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class AttenMixer(readouts.Readout):
  """Atten-Mixer readout: item states [batch, length, dim] -> session summary [batch, dim].

  Call with `(states, mask)`; `mask` is a boolean padding mask [batch, length] or the item ids with
  0 as padding (the Keras mask of `states` by default). With `return_attention=True` the call
  returns `(summary, maps)` where `maps["levels"]` is the per-level attention [batch, heads, L,
  length] and `maps["pooled"]` the pooled, renormalised attention [batch, heads, length] (before
  dropout). The attention arithmetic runs in float32 (or float64) under mixed precision.
  """

  def __init__(self,
               num_levels: int = Options.num_levels,
               level_aggregation: str = Options.level_aggregation,
               level_selection: str = Options.level_selection,
               num_heads: int = Options.num_heads,
               head_split: str = Options.head_split,
               attention_scoring: str = Options.attention_scoring,
               attention_temperature: str = Options.attention_temperature,
               mask_level_attention: bool = Options.mask_level_attention,
               pooling: str = Options.pooling,
               lp_norm: float = Options.lp_norm,
               pooled_normalization: str = Options.pooled_normalization,
               normalize_queries_over_levels: bool = Options.normalize_queries_over_levels,
               dropout: float = Options.attention_dropout,
               layer_norm: bool = Options.layer_norm,
               normalize_readout: bool = Options.normalize_readout,
               **kwargs):
    """Initialises the layer.

    Args:
      num_levels, level_aggregation, level_selection, num_heads, head_split, attention_scoring,
      attention_temperature, mask_level_attention, pooling, lp_norm, pooled_normalization,
      normalize_queries_over_levels, dropout, layer_norm, normalize_readout: the options of
        `tfrs_attenmixer.config.AttenMixerOptions` (`dropout` is its `attention_dropout`),
        whose fields' help gives their meaning.
      **kwargs: base layer arguments.

    Raises:
      ValueError: an option outside its choices or range, naming it.
    """
    options = Options.from_layer_arguments(locals())
    super().__init__(**kwargs)
    self.options = options

  def build(self, input_shape):
    dim = input_shape[-1]
    if dim % self.options.num_heads:
      raise ValueError(f"AttenMixer: num_heads ({self.options.num_heads}) must divide the item "
                       f"state size ({dim}).")
    dtype = self.dtype_policy
    self.level_projections = [
        tf.keras.layers.Dense(dim, dtype=dtype, name=f"level_{level}_query")
        for level in range(1, self.options.num_levels + 1)
    ]
    self.query_projection = tf.keras.layers.Dense(dim, dtype=dtype, name="query")
    self.key_projection = tf.keras.layers.Dense(dim, dtype=dtype, name="key")
    self.value_projection = tf.keras.layers.Dense(dim, dtype=dtype, name="value")
    # With head_split="transpose" the key and value maps are folded into the queries and the
    # pooled states (see `_folded_heads`), so these layers are never called: build them here.
    self.key_projection.build(tf.TensorShape([None, dim]))
    self.value_projection.build(tf.TensorShape([None, dim]))
    self.attention_dropout = dropout_lib.CounterDropout(self.options.attention_dropout,
                                                        aligned_axis=-1, dtype=dtype)
    self.output_norm = (
        tf.keras.layers.LayerNormalization(epsilon=1e-8, dtype=dtype, name="layer_norm")
        if self.options.layer_norm else None)
    super().build(input_shape)

  def call(self,
           states: tf.Tensor,
           mask: Optional[tf.Tensor] = None,
           training: Optional[bool] = None,
           return_attention: bool = False
          ) -> Union[tf.Tensor, Tuple[tf.Tensor, Dict[str, tf.Tensor]]]:
    """[batch, length, dim], mask [batch, length] -> [batch, dim] (and the maps, see class)."""
    mask = readouts.padding_mask(mask, states)
    level_maps = self._level_attention(self._level_queries(states, mask), states, mask)
    pooled = self._pool(level_maps, mask)
    weights = tf.cast(self.attention_dropout(pooled, training=training), states.dtype)
    if self.options.head_split == "transpose":
      # sum_t w_t (h_t W_h^V + b_h^V) = (sum_t w_t h_t) W_h^V + (sum_t w_t) b_h^V: the value map
      # is applied once per head instead of once per position.
      kernel, bias = self._folded_heads(self.value_projection, states.dtype)
      pooled_states = tf.einsum("bht,bte->bhe", weights, states)  # [batch, heads, dim]
      summary = (_fold_values(pooled_states, kernel) +
                 tf.reduce_sum(weights, axis=-1)[..., None] * bias)
    else:
      values = tf.reshape(self.value_projection(states),
                          [tf.shape(states)[0], tf.shape(states)[1], self.options.num_heads, -1])
      summary = tf.einsum("bht,bthd->bhd", weights, values)  # [batch, heads, dim / heads]
    summary = tf.reshape(summary, [tf.shape(states)[0], states.shape[-1]])
    if self.output_norm is not None:
      summary = self.output_norm(summary)
    if self.options.normalize_readout:
      summary = tf.math.l2_normalize(summary, axis=-1, epsilon=1e-12)
    if return_attention:
      return summary, {"levels": level_maps, "pooled": pooled}
    return summary

  def _level_queries(self, states: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The L level queries Q_l [batch, L, dim]."""
    first, last = readouts.session_bounds(mask)
    offsets = tf.range(self.options.num_levels)[None, :]
    if self.options.level_selection == "recent":
      positions = last[:, None] - offsets
    else:
      positions = first[:, None] + offsets
    length = tf.shape(states)[1]
    inside = (positions >= 0) & (positions < length)
    positions = tf.clip_by_value(positions, 0, length - 1)
    inside &= tf.gather(mask, positions, axis=1, batch_dims=1)
    slots = tf.gather(states, positions, axis=1, batch_dims=1)
    slots *= tf.cast(inside, states.dtype)[..., None]  # [batch, L, dim], zeros outside the session

    if self.options.level_aggregation == "sum":
      groups = tf.unstack(tf.cumsum(slots, axis=1), self.options.num_levels, axis=1)
    else:
      groups = [tf.reshape(slots[:, :level], [tf.shape(slots)[0], level * slots.shape[-1]])
                for level in range(1, self.options.num_levels + 1)]
    queries = tf.stack([project(group) for project, group in zip(self.level_projections, groups)],
                       axis=1)
    if self.options.normalize_queries_over_levels:
      queries /= tf.norm(queries, axis=1, keepdims=True) + 1e-12
    return queries

  def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
    """[batch, n, dim] -> [batch, heads, n, dim / heads] (see `head_split`)."""
    batch, n = tf.shape(x)[0], tf.shape(x)[1]
    if self.options.head_split == "reshape":
      return tf.reshape(x, [batch, self.options.num_heads, n, -1])
    return tf.transpose(tf.reshape(x, [batch, n, self.options.num_heads, -1]), [0, 2, 1, 3])

  def _folded_heads(self, projection: tf.keras.layers.Dense,
                    dtype: tf.DType) -> Tuple[tf.Tensor, tf.Tensor]:
    """A dense map's kernel per head [heads, dim / heads, dim] (head h's output unit d reads
    input unit e at [h, d, e]) and bias [heads, dim / heads]."""
    dim = projection.kernel.shape[0]
    kernel = tf.reshape(tf.cast(projection.kernel, dtype), [dim, self.options.num_heads, -1])
    return (tf.transpose(kernel, [1, 2, 0]),
            tf.reshape(tf.cast(projection.bias, dtype), [self.options.num_heads, -1]))

  def _map_dtype(self) -> tf.DType:
    dtype = tf.as_dtype(self.compute_dtype)
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype

  def _level_attention(self, queries: tf.Tensor, states: tf.Tensor,
                       mask: tf.Tensor) -> tf.Tensor:
    """Per-level attention maps over positions [batch, heads, L, length]."""
    q = self._split_heads(self.query_projection(queries))
    if self.options.head_split == "transpose":
      # q . (h_t W_h^K + b_h^K) = (W_h^K q) . h_t + q . b_h^K: the key map is applied to the L
      # queries instead of every position (the same logits up to rounding).
      kernel, bias = self._folded_heads(self.key_projection, states.dtype)
      folded = _fold_queries(q, kernel)  # [batch, heads, L, dim]
      logits = (tf.einsum("bhle,bte->bhlt", folded, states) +
                tf.einsum("bhld,hd->bhl", q, bias)[..., None])
      logits = tf.cast(logits, self._map_dtype())
    else:
      k = self._split_heads(self.key_projection(states))
      logits = tf.cast(tf.einsum("bhld,bhtd->bhlt", q, k), self._map_dtype())
    if self.options.attention_scoring == "softmax":
      dim = states.shape[-1]
      logits /= math.sqrt(dim if self.options.attention_temperature == "model_dim"
                          else dim // self.options.num_heads)
    else:
      logits = 2.0 * tf.sigmoid(logits)
    if self.options.mask_level_attention:
      logits = tf.where(mask[:, None, None, :], logits, _MASKED_LOGIT)
    return tf.nn.softmax(logits, axis=-1)

  def _pool(self, level_maps: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Pools levels and renormalises over valid positions: [batch, heads, L, length] -> [batch,
    heads, length]."""
    if self.options.pooling == "lp":
      power_sum = tf.reduce_sum(level_maps**self.options.lp_norm, axis=2)
      # The floor keeps the gradient of x^(1/p) finite where every level is 0.
      floor = np.finfo(level_maps.dtype.as_numpy_dtype).tiny
      pooled = tf.maximum(power_sum, floor)**(1.0 / self.options.lp_norm)
    elif self.options.pooling == "mean":
      pooled = tf.reduce_mean(level_maps, axis=2)
    else:
      pooled = tf.reduce_max(level_maps, axis=2)
    valid = mask[:, None, :]
    if self.options.pooled_normalization == "sum":
      pooled = tf.where(valid, pooled, 0.0)
      return tf.math.divide_no_nan(pooled, tf.reduce_sum(pooled, axis=-1, keepdims=True))
    return tf.nn.softmax(tf.where(valid, 2.0 * pooled, _MASKED_LOGIT), axis=-1)

  def get_config(self) -> Dict[str, Any]:
    return {**super().get_config(), **self.options.layer_arguments()}


# The two folded head maps, with their gradients written out. Autodiff of the einsums would
# compute each kernel gradient with the upstream gradient as the left operand of the product,
# which makes XLA transpose that [batch, heads, L, dim] tensor so that (batch, L) come last, a
# strided copy slower than the product itself; with the other operand on the left, the
# transposes are of the small tensors, or keep `dim` contiguous.


def _head_map(x_subscripts: str, output_subscripts: str):
  """The product of x with a per-head kernel [heads, d, dim] (`h`, `d`, `e` in the subscripts),
  whose kernel gradient puts the operand holding `d` on the left."""
  d_first = "d" in x_subscripts

  @tf.custom_gradient
  def head_map(x: tf.Tensor, kernel: tf.Tensor):
    def grad(upstream):
      pairs = [(x_subscripts, x), (output_subscripts, upstream)]
      (left, a), (right, b) = pairs if d_first else pairs[::-1]
      return (tf.einsum(f"{output_subscripts},hde->{x_subscripts}", upstream, kernel),
              tf.einsum(f"{left},{right}->hde", a, b))
    return tf.einsum(f"{x_subscripts},hde->{output_subscripts}", x, kernel), grad
  return head_map


# q [batch, heads, L, d] -> [batch, heads, L, dim]; pooled [batch, heads, dim] -> [batch, heads, d].
_fold_queries = _head_map("bhld", "bhle")
_fold_values = _head_map("bhe", "bhd")
