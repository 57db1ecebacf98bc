"""Session readouts: item states [batch, length, dim] + padding mask -> summary [batch, dim].

A readout summarises the encoded items of a session into one vector `s`. The retrieval model then
forms the session representation `z = W_m [s || h_n]` from it and the last item state `h_n`, so a
readout need not include the last item itself. `AttenMixer` (in `attenmixer.py`) is the paper's
readout; the baselines here share its interface:

  readout(states, mask, training=None) -> [batch, dim]

where `mask` is a boolean padding mask [batch, length] (True = item) or the item ids [batch, length]
with 0 as padding, and defaults to the Keras mask of `states` (or no padding). Padding may be on
either side of a row as long as its valid items are contiguous.

This module also holds the position helpers the readouts share (`padding_mask`, `session_bounds`,
`gather_last`).
"""

from typing import Optional, Tuple

import tensorflow as tf


def padding_mask(mask_or_ids: Optional[tf.Tensor], states: tf.Tensor) -> tf.Tensor:
  """The boolean padding mask [batch, length] of `states` [batch, length, dim].

  Args:
    mask_or_ids: bool [batch, length] (True = item), or integer item ids with 0 as padding, or
      None (no padding).
    states: the item states the mask belongs to.
  """
  if mask_or_ids is None:
    return tf.ones(tf.shape(states)[:2], tf.bool)
  mask_or_ids = tf.convert_to_tensor(mask_or_ids)
  if mask_or_ids.dtype == tf.bool:
    return mask_or_ids
  return tf.not_equal(mask_or_ids, 0)


def session_bounds(mask: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Positions of the first and last item of each row: two int32 [batch] (in range, but
  meaningless, for rows without items)."""
  positions = tf.range(tf.shape(mask)[1])[None, :]
  big = tf.shape(mask)[1]
  first = tf.reduce_min(tf.where(mask, positions, big), axis=1)
  last = tf.reduce_max(tf.where(mask, positions, -1), axis=1)
  return tf.minimum(first, big - 1), tf.maximum(last, 0)


def gather_last(states: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
  """The state of each session's most recent item: [batch, length, dim] -> [batch, dim]."""
  _, last = session_bounds(mask)
  return tf.gather(states, last, axis=1, batch_dims=1)


class Readout(tf.keras.layers.Layer):
  """Base of the readouts: accepts a Keras mask; the [batch, dim] output carries none."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.supports_masking = True

  def compute_mask(self, inputs, mask=None):
    return None


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class LastItemReadout(Readout):
  """The state of the most recent item, `h_n` (the "instance view" alone)."""

  def call(self, states: tf.Tensor, mask: Optional[tf.Tensor] = None) -> tf.Tensor:
    """[batch, length, dim], mask [batch, length] -> [batch, dim]."""
    return gather_last(states, padding_mask(mask, states))


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class MeanReadout(Readout):
  """The mean of the item states over the valid positions."""

  def call(self, states: tf.Tensor, mask: Optional[tf.Tensor] = None) -> tf.Tensor:
    """[batch, length, dim], mask [batch, length] -> [batch, dim]."""
    weights = tf.cast(padding_mask(mask, states), states.dtype)[..., None]
    return tf.math.divide_no_nan(tf.reduce_sum(states * weights, axis=1),
                                 tf.reduce_sum(weights, axis=1))


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class SRGNNAttentionReadout(Readout):
  """SR-GNN's soft attention readout (Wu et al., AAAI 2019, eq. 6).

    alpha_j = q^T sigmoid(W_1 h_n + W_2 h_j + c),   s = sum_j alpha_j h_j   (valid j only)

  The retrieval model concatenates `h_n` and projects (`W_3 [s || h_n]` in SR-GNN), which makes the
  whole SR-GNN hybrid readout.
  """

  def build(self, input_shape):
    dim, dtype = input_shape[-1], self.dtype_policy
    self.last_projection = tf.keras.layers.Dense(dim, use_bias=False, dtype=dtype,
                                                 name="last_projection")
    self.item_projection = tf.keras.layers.Dense(dim, dtype=dtype, name="item_projection")
    self.attention_vector = tf.keras.layers.Dense(1, use_bias=False, dtype=dtype,
                                                  name="attention_vector")
    super().build(input_shape)

  def call(self, states: tf.Tensor, mask: Optional[tf.Tensor] = None) -> tf.Tensor:
    """[batch, length, dim], mask [batch, length] -> [batch, dim]."""
    mask = padding_mask(mask, states)
    last = self.last_projection(gather_last(states, mask))[:, None, :]
    alpha = self.attention_vector(tf.sigmoid(last + self.item_projection(states)))
    return tf.reduce_sum(alpha * states * tf.cast(mask, states.dtype)[..., None], axis=1)
