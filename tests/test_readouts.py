"""Baseline readouts (last item, mean, SR-GNN attention) and the position helpers."""

import numpy as np
import pytest

import tfrs_attenmixer as tam
import tensorflow as tf

DIM = 8
READOUTS = [tam.LastItemReadout, tam.MeanReadout, tam.SRGNNAttentionReadout, tam.AttenMixer]


def random_batch(rng, lengths, length):
  states = rng.normal(size=(len(lengths), length, DIM)).astype(np.float32)
  mask = np.zeros((len(lengths), length), bool)
  for row, n in enumerate(lengths):
    start = rng.integers(0, length - n + 1)
    mask[row, start:start + n] = True
  return states, mask


def make(cls, **kwargs):
  if cls is tam.AttenMixer:
    kwargs.setdefault("num_heads", 2)
  return cls(**kwargs)


def test_session_bounds_and_gather_last():
  mask = np.array([[0, 0, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1]], bool)
  first, last = tam.readouts.session_bounds(tf.constant(mask))
  np.testing.assert_array_equal(first, [2, 0, 1, 0])
  np.testing.assert_array_equal(last, [3, 2, 1, 3])
  states = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
  np.testing.assert_array_equal(tam.readouts.gather_last(states, mask),
                                states[np.arange(4), [3, 2, 1, 3]])


def test_last_item_and_mean_match_numpy():
  rng = np.random.default_rng(0)
  states, mask = random_batch(rng, [1, 3, 7], 7)
  last = tam.LastItemReadout()(states, mask=mask).numpy()
  mean = tam.MeanReadout()(states, mask=mask).numpy()
  for row in range(3):
    valid = states[row][mask[row]]
    np.testing.assert_allclose(last[row], valid[-1])
    np.testing.assert_allclose(mean[row], valid.mean(0), rtol=1e-6)


def test_srgnn_attention_matches_numpy():
  rng = np.random.default_rng(1)
  states, mask = random_batch(rng, [1, 4, 6], 6)
  layer = tam.SRGNNAttentionReadout()
  layer(states, mask=mask)
  for weight in layer.weights:
    weight.assign(rng.normal(size=weight.shape))
  out = layer(states, mask=mask).numpy()
  w1 = layer.last_projection.kernel.numpy()
  w2, c = layer.item_projection.kernel.numpy(), layer.item_projection.bias.numpy()
  q = layer.attention_vector.kernel.numpy()[:, 0]
  for row in range(3):
    items = states[row][mask[row]].astype(np.float64)
    alpha = (1 / (1 + np.exp(-(items[-1] @ w1 + items @ w2 + c)))) @ q
    np.testing.assert_allclose(out[row], alpha @ items, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", READOUTS)
def test_padding_invariance_and_lengths_1_to_20(cls):
  rng = np.random.default_rng(2)
  layer = make(cls, **({"dropout": 0.0} if cls is tam.AttenMixer else {}))
  lengths = list(range(1, 21))
  states, mask = random_batch(rng, lengths, 22)
  batch = layer(states, mask=mask).numpy()
  assert batch.shape == (20, DIM) and np.isfinite(batch).all()
  for row in range(20):
    alone = layer(states[row][mask[row]][None]).numpy()[0]
    np.testing.assert_allclose(batch[row], alone, atol=2e-5)
  # An all-padding row stays finite.
  assert np.isfinite(layer(states[:1], mask=np.zeros((1, 22), bool)).numpy()).all()


@pytest.mark.parametrize("cls", READOUTS)
def test_config_round_trip_and_keras_mask(cls):
  rng = np.random.default_rng(3)
  ids = tf.keras.Input([None], dtype=tf.int32)
  embedded = tf.keras.layers.Embedding(10, DIM, mask_zero=True)(ids)
  layer = make(cls)
  model = tf.keras.Model(ids, layer(embedded))
  items = np.array([[0, 3, 4, 5], [1, 2, 0, 0]], np.int32)
  # The Keras mask of the embedding reaches the readout.
  np.testing.assert_allclose(model(items).numpy()[0], model(items[:1, 1:]).numpy()[0], atol=2e-6)
  clone = cls.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  states = rng.normal(size=(2, 4, DIM)).astype(np.float32)
  clone(states, mask=items)
  clone.set_weights(layer.get_weights())
  np.testing.assert_array_equal(clone(states, mask=items).numpy(),
                                layer(states, mask=items).numpy())


@pytest.mark.parametrize("cls", [tam.SRGNNAttentionReadout, tam.AttenMixer])
def test_gradients_reach_every_variable(cls):
  rng = np.random.default_rng(4)
  states, mask = random_batch(rng, [2, 5], 5)
  layer = make(cls)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(states, mask=mask, training=True) * rng.normal(size=(2, DIM)))
  grads = tape.gradient(loss, layer.trainable_variables)
  assert layer.trainable_variables
  for variable, grad in zip(layer.trainable_variables, grads):
    assert grad is not None and np.abs(grad.numpy()).max() > 0, variable.name


@pytest.mark.parametrize("cls", READOUTS)
def test_xla_and_mixed_bfloat16(cls):
  states, mask = random_batch(np.random.default_rng(5), [1, 3, 6], 6)
  layer = make(cls)
  eager = layer(states, mask=mask).numpy()
  compiled = tf.function(lambda s, m, t: layer(s, mask=m, training=t), jit_compile=True)
  np.testing.assert_allclose(compiled(states, mask, False).numpy(), eager, atol=1e-5)
  assert np.isfinite(compiled(states, mask, True).numpy()).all()
  mixed = make(cls, dtype="mixed_bfloat16")
  mixed(tf.cast(states, tf.bfloat16), mask=mask)
  mixed.set_weights(layer.get_weights())
  out = mixed(tf.cast(states, tf.bfloat16), mask=mask)
  assert out.dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), eager,
                             atol=0.05 * max(1.0, np.abs(eager).max()))
