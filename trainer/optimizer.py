"""`FusedAdam`: Keras' Adam whose dense update is TensorFlow's fused `ResourceApplyAdam` kernel.

Keras' Adam updates a variable with four separate tensor expressions (or one XLA computation);
over the N x d item table that costs several times the fused C++ kernel of `tf.raw_ops.
ResourceApplyAdam` (`benchmarks.train_step`, `floor_update_*` against `step_update_ms`). The
arithmetic is the same:

    m <- m + (1 - beta_1) (g - m);   v <- v + (1 - beta_2) (g^2 - v)
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

Everything else (slots, iterations, learning-rate schedules, checkpoints, distribution) is Keras'
own, so a checkpoint of `FusedAdam` is one of `tf.keras.optimizers.Adam` and vice versa. Sparse
gradients, `amsgrad` and non-float32 variables take Keras' own update. The slots are found through
Keras' private `_momentums`, `_velocities`, `_index_dict` and `_var_key`
(tests/test_optimizer.py fails, naming them, if Keras changes them).
"""

import tensorflow as tf


class FusedAdam(tf.keras.optimizers.Adam):
  """`tf.keras.optimizers.Adam` (same arguments) with a fused dense update (module doc)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # The fused kernel is TensorFlow's; XLA would recompile it into the slower expression.
    self.jit_compile = False

  def update_step(self, gradient, variable):
    if (isinstance(gradient, tf.IndexedSlices) or self.amsgrad or
        getattr(self, "adaptive_epsilon", False) or variable.dtype != tf.float32):
      return super().update_step(gradient, variable)
    index = self._index_dict[self._var_key(variable)]  # pylint: disable=protected-access
    local_step = tf.cast(self.iterations + 1, tf.float32)
    beta_1 = tf.cast(self.beta_1, tf.float32)
    beta_2 = tf.cast(self.beta_2, tf.float32)
    return tf.raw_ops.ResourceApplyAdam(
        var=variable.handle,
        m=self._momentums[index].handle,  # pylint: disable=protected-access
        v=self._velocities[index].handle,  # pylint: disable=protected-access
        beta1_power=tf.pow(beta_1, local_step),
        beta2_power=tf.pow(beta_2, local_step),
        lr=tf.cast(self.learning_rate, tf.float32),
        beta1=beta_1,
        beta2=beta_2,
        epsilon=tf.cast(self.epsilon, tf.float32),
        grad=tf.cast(gradient, tf.float32))
