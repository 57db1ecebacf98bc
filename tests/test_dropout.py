"""`CounterDropout`: Keras' dropout distribution from a hashed mask, resumable and recomputable."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_attenmixer import dropout


@pytest.fixture(autouse=True)
def _generators():
  tf.keras.backend.experimental.enable_tf_random_generator()
  tf.keras.utils.set_random_seed(11)


def test_rate_scale_and_independence_over_a_large_table():
  layer = dropout.CounterDropout(0.1)
  x = tf.ones([30000, 256])
  first, second = (layer(x, training=True).numpy() for _ in range(2))
  n = first.size
  kept = first != 0
  # Kept fraction within 5 standard deviations of 0.9; kept values scaled by 1 / 0.9.
  assert abs(kept.mean() - 0.9) < 5 * np.sqrt(0.09 / n)
  np.testing.assert_allclose(first[kept], 1 / 0.9, rtol=1e-6)
  bound = 5 / np.sqrt(kept.shape[0] * (kept.shape[1] - 1))
  masks = kept.astype(np.float32)
  pairs = [(masks, (second != 0).astype(np.float32))]
  for lag in (1, 2, 3, 8, 16):  # neighbours along each axis
    pairs += [(masks[:, :-lag], masks[:, lag:]), (masks[:-lag], masks[lag:])]
  for a, b in pairs:
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < bound
  # Every column and every bit of the row index matter: per-column rates are all near 0.9.
  assert np.abs(kept.mean(axis=0) - 0.9).max() < 5 * np.sqrt(0.09 / kept.shape[0])


def test_inference_and_rate_zero_are_identity():
  x = tf.random.normal([4, 5])
  np.testing.assert_array_equal(dropout.CounterDropout(0.5)(x, training=False), x)
  np.testing.assert_array_equal(dropout.CounterDropout(0.0)(x, training=True), x)


def test_same_generator_state_same_mask_and_rows_recompute_it():
  layer = dropout.CounterDropout(0.3)
  x = tf.ones([7, 9])
  layer(x, training=True)  # creates the generator
  generator = layer._random_generator._generator  # pylint: disable=protected-access
  state = tf.identity(generator.state)
  keys = layer.draw_keys()
  generator.state.assign(state)
  first = layer(x, training=True).numpy()
  generator.state.assign(state)
  np.testing.assert_array_equal(layer(x, training=True), first)
  # The bits of selected rows are those rows' bits in the whole tensor.
  bits = dropout.random_bits([7, 9], keys).numpy()
  np.testing.assert_array_equal(dropout.rows_random_bits(tf.constant([2, 5]), 9, keys),
                                bits[[2, 5]])
  np.testing.assert_array_equal(first != 0, bits >= dropout.drop_threshold(0.3).numpy())


def test_under_xla_same_as_eager_and_config_round_trip():
  keys = tf.constant([3, 4])
  eager = dropout.keep_mask([5, 6, 7], keys, 0.2)
  compiled = tf.function(lambda k: dropout.keep_mask([5, 6, 7], k, 0.2), jit_compile=True)
  np.testing.assert_array_equal(compiled(keys), eager)
  layer = dropout.CounterDropout(0.25, aligned_axis=1, name="d")
  clone = dropout.CounterDropout.from_config(layer.get_config())
  assert clone.rate == 0.25 and clone.aligned_axis == 1
  with pytest.raises(ValueError, match="noise_shape"):
    dropout.CounterDropout(0.1, noise_shape=[1, 2])


@pytest.mark.parametrize("shape,axis", [([64, 20, 256], 1), ([64, 8, 20], 2), ([6, 20, 3, 40], 1)])
def test_an_aligned_axis_cut_on_the_left_keeps_its_mask(shape, axis):
  """Positions of left-padded sessions: a batch cut to its longest session (fewer padding
  columns) gets the same bits on the positions it keeps; the bits still look independent."""
  keys = tf.constant([12345, 678])
  whole = dropout.random_bits(shape, keys, aligned_axis=axis).numpy()
  cut_shape = list(shape)
  cut_shape[axis] = 7
  cut = dropout.random_bits(cut_shape, keys, aligned_axis=axis).numpy()
  np.testing.assert_array_equal(cut, np.take(whole, range(shape[axis] - 7, shape[axis]), axis))
  assert not np.array_equal(whole, dropout.random_bits(shape, keys).numpy())
  kept = whole >= dropout.drop_threshold(0.1).numpy()
  n = kept.size
  assert abs(kept.mean() - 0.9) < 5 * np.sqrt(0.09 / n)
  rows = kept.reshape(-1, shape[-1]).astype(np.float32)
  assert abs(np.corrcoef(rows[:-1].ravel(), rows[1:].ravel())[0, 1]) < 5 / np.sqrt(rows.size)
  # No two rows share their bits (distinct row indices).
  assert len({row.tobytes() for row in whole.reshape(-1, shape[-1])}) == n // shape[-1]


def test_layer_with_an_aligned_axis_masks_a_cut_batch_alike():
  layer = dropout.CounterDropout(0.5, aligned_axis=-1)
  x = tf.random.normal([4, 3, 10])
  layer(x, training=True)
  generator = layer._random_generator._generator  # pylint: disable=protected-access
  state = tf.identity(generator.state)
  whole = layer(x, training=True).numpy()
  generator.state.assign(state)
  np.testing.assert_array_equal(layer(x[:, :, 6:], training=True), whole[:, :, 6:])
