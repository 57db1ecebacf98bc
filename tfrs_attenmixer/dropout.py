"""Dropout from a counter-based hash: the mask of a whole tensor from two random keys.

`tf.keras.layers.Dropout` draws one Philox number per element, which costs more than the
matrix products it masks when the tensor is the item table (N x d elements every step).
`CounterDropout` draws two 31-bit keys per call from the same checkpointed random generator and
hashes each element's position with them instead:

    bits(row, col) = mix(mix(mix(row ^ k0) ^ k1) ^ rotl(col, 20)),
    keep = bits >= round(rate * 2^32)

with `row` the flat index over all but the last axis, `col` the index in the last axis, `rotl`
a left rotation of the 32-bit word (neighbouring columns then differ in high bits: `mix` of
consecutive words leaves their masks slightly correlated) and `mix` the `lowbias32` integer
hash (a bijection of 32-bit words with low avalanche bias): two hashes per row, one per
element. Each element is kept with probability `1 - rate` (to 2^-32) and kept values are scaled
by `1 / (1 - rate)`, as `tf.keras.layers.Dropout` does; masks of different calls (keys) and of
different elements are independent as far as the hash's statistics go (`tests/test_dropout.py`
checks rates and correlations at several distances). Under XLA the mask is fused into the
consumer and never stored, and the same mask can be recomputed from the keys (the training step
does so for the item table's sparse rows in its gradient).

With an `aligned_axis` (the positions of a left-padded session), that axis is indexed from its
end, with a fixed stride of `MAX_ALIGNED` rows (or as the reversed column): a tensor cut on the
left of that axis, a batch with less padding, then gets the same mask on every element it keeps.
"""

from typing import Optional

import tensorflow as tf

_MIX_1 = 0x7FEB352D
_MIX_2 = 0x846CA68B
_KEY_MAX = 2**31 - 1
MAX_ALIGNED = 4096  # the stride of an aligned axis that is not the last: its longest length


def _mix(x: tf.Tensor) -> tf.Tensor:
  """lowbias32: uint32 -> uint32, elementwise."""
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * tf.constant(_MIX_1, tf.uint32)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15)) * tf.constant(_MIX_2, tf.uint32)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _as_uint32(x: tf.Tensor) -> tf.Tensor:
  return tf.bitcast(tf.cast(x, tf.int32), tf.uint32)


def rows_random_bits(rows: tf.Tensor, num_cols, keys: tf.Tensor) -> tf.Tensor:
  """uint32 [len(rows), num_cols]: the hash bits of the given rows (int [n]) for keys int32 [2].

  Row `r` gets the same bits here as in `random_bits` of a tensor with at least `r + 1` rows
  of `num_cols`, so a gradient can recompute the mask of a few rows.
  """
  keys = _as_uint32(keys)
  row_hash = _mix(tf.bitwise.bitwise_xor(
      _mix(tf.bitwise.bitwise_xor(_as_uint32(tf.reshape(rows, [-1, 1])), keys[0])), keys[1]))
  cols = _as_uint32(tf.reshape(tf.range(num_cols), [1, -1]))
  cols = tf.bitwise.bitwise_or(tf.bitwise.left_shift(cols, 20), tf.bitwise.right_shift(cols, 12))
  return _mix(tf.bitwise.bitwise_xor(row_hash, cols))


def random_bits(shape, keys: tf.Tensor, aligned_axis: Optional[int] = None) -> tf.Tensor:
  """uint32 `shape` (int [rank], rank >= 1) of hash bits for the keys int32 [2] (module doc).

  `aligned_axis` (in [0, rank)) is indexed from its end (module doc); when it is not the last
  axis its length must be at most `MAX_ALIGNED`.
  """
  shape = tf.convert_to_tensor(shape, tf.int32)
  if aligned_axis is None or aligned_axis == shape.shape[0] - 1:
    bits = tf.reshape(rows_random_bits(tf.range(tf.reduce_prod(shape[:-1])), shape[-1], keys),
                      shape)
    return bits if aligned_axis is None else tf.reverse(bits, [-1])
  outer, length = tf.reduce_prod(shape[:aligned_axis]), shape[aligned_axis]
  inner = tf.reduce_prod(shape[aligned_axis + 1:-1])
  rows = ((tf.range(outer)[:, None, None] * MAX_ALIGNED +
           (length - 1 - tf.range(length))[None, :, None]) * inner +
          tf.range(inner)[None, None, :])
  return tf.reshape(rows_random_bits(tf.reshape(rows, [-1]), shape[-1], keys), shape)


def drop_threshold(rate: float) -> tf.Tensor:
  """The uint32 below which an element is dropped: round(rate * 2^32)."""
  return tf.constant(min(int(round(rate * 2.0**32)), 2**32 - 1), tf.uint32)


def keep_mask(shape, keys: tf.Tensor, rate: float,
              aligned_axis: Optional[int] = None) -> tf.Tensor:
  """bool `shape`: True where an element is kept (probability 1 - rate); `aligned_axis` as in
  `random_bits`."""
  return random_bits(shape, keys, aligned_axis) >= drop_threshold(rate)


def apply_mask(inputs: tf.Tensor, keep: tf.Tensor, rate: float) -> tf.Tensor:
  """Kept values scaled by 1 / (1 - rate), dropped ones zero."""
  scale = tf.cast(1.0 / (1.0 - rate), inputs.dtype)
  return tf.where(keep, inputs * scale, tf.zeros_like(inputs))


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class CounterDropout(tf.keras.layers.Dropout):
  """`tf.keras.layers.Dropout` with the mask hashed from two keys per call (module doc).

  Same arguments, same distribution and the same random generator as Keras' layer (so the
  trainer checkpoints it and a resumed run draws the same masks); `noise_shape` is not supported.
  `aligned_axis` (an axis of the inputs, negative counts from the end) is indexed from its end
  (module doc): inputs cut on the left of that axis get the same mask on what they keep.
  `draw_keys()` gives the int32 [2] keys of one call, for callers that apply the mask themselves.
  """

  def __init__(self, rate: float, noise_shape=None, seed: Optional[int] = None,
               aligned_axis: Optional[int] = None, **kwargs):
    if noise_shape is not None:
      raise ValueError("CounterDropout does not support noise_shape.")
    super().__init__(rate, seed=seed, **kwargs)
    self.aligned_axis = aligned_axis

  def get_config(self):
    return {**super().get_config(), "aligned_axis": self.aligned_axis}

  def draw_keys(self) -> tf.Tensor:
    """int32 [2]: fresh keys from the layer's random generator."""
    return self._random_generator.random_uniform(  # pylint: disable=protected-access
        [2], minval=0, maxval=_KEY_MAX, dtype=tf.int32)

  def call(self, inputs, training=None):
    if training is None:
      training = tf.keras.backend.learning_phase()
    if self.rate == 0:
      return tf.identity(inputs)

    def dropped():
      axis = self.aligned_axis
      if axis is not None and axis < 0:
        axis += inputs.shape.rank
      return apply_mask(inputs, keep_mask(tf.shape(inputs), self.draw_keys(), self.rate, axis),
                        self.rate)

    return tf.__internal__.smart_cond.smart_cond(training, dropped,
                                                 lambda: tf.identity(inputs))
