"""`FusedAdam` takes the same steps as Keras' Adam, through Keras' own slots."""

import numpy as np
import pytest
import tensorflow as tf

from trainer.optimizer import FusedAdam


def _train(optimizer, steps=5):
  tf.keras.utils.set_random_seed(0)
  dense = tf.Variable(tf.random.normal([50, 8]))
  bias = tf.Variable(tf.random.normal([8]))
  rows = tf.Variable(tf.random.normal([20, 8]))
  variables = [dense, bias, rows]
  optimizer.build(variables)

  @tf.function
  def step(i):
    grads = [tf.random.stateless_normal(v.shape, [i, k]) for k, v in enumerate(variables[:2])]
    # A sparse gradient takes Keras' own update.
    grads.append(tf.IndexedSlices(tf.random.stateless_normal([3, 8], [i, 9]),
                                  tf.constant([1, 4, 4])))
    optimizer.apply_gradients(zip(grads, variables))

  for i in range(steps):
    step(tf.constant(i))
  return [v.numpy() for v in variables + optimizer.variables]


def test_same_steps_and_slots_as_keras_adam():
  schedule = tf.keras.optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5, staircase=True)
  fused = _train(FusedAdam(schedule, epsilon=1e-8))
  keras = _train(tf.keras.optimizers.Adam(schedule, epsilon=1e-8))
  assert len(fused) == len(keras)
  for a, b in zip(fused, keras):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # rounding order only
  assert not np.allclose(fused[0], _train(FusedAdam(1e-3))[0])  # the comparison can fail


def test_keras_private_members_it_relies_on_still_exist():
  optimizer = FusedAdam(1e-3)
  variable = tf.Variable(tf.zeros([2]))
  optimizer.build([variable])
  for name in ("_momentums", "_velocities", "_index_dict", "_var_key"):
    assert hasattr(optimizer, name), (
        f"tf.keras.optimizers.Adam no longer has {name}: trainer/optimizer.py must change")
  index = optimizer._index_dict[optimizer._var_key(variable)]  # pylint: disable=protected-access
  assert optimizer._momentums[index].shape == variable.shape  # pylint: disable=protected-access


def test_checkpoints_are_keras_adam_checkpoints(tmp_path):
  variable = tf.Variable(tf.ones([3]))
  fused = FusedAdam(1e-2)
  fused.build([variable])
  fused.apply_gradients([(tf.constant([1.0, 2.0, 3.0]), variable)])
  path = tf.train.Checkpoint(optimizer=fused, variable=variable).save(str(tmp_path / "ckpt"))
  other_variable = tf.Variable(tf.zeros([3]))
  keras = tf.keras.optimizers.Adam(1e-2)
  keras.build([other_variable])
  tf.train.Checkpoint(optimizer=keras, variable=other_variable).restore(path).assert_consumed()
  assert int(keras.iterations.numpy()) == 1
  np.testing.assert_allclose(keras.variables[1].numpy(), fused.variables[1].numpy())


@pytest.mark.parametrize("dtype", [tf.float16, tf.float64])
def test_other_dtypes_take_keras_update(dtype):
  variable = tf.Variable(tf.ones([3], dtype))
  optimizer = FusedAdam(1e-2)
  optimizer.build([variable])
  optimizer.apply_gradients([(tf.ones([3], dtype), variable)])
  assert variable.dtype == dtype and np.all(variable.numpy() < 1)
