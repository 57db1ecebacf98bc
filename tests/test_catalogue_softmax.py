"""The hand-written training gradients equal TensorFlow's autodiff of the model's loss."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_attenmixer.config import ModelConfig
from tfrs_attenmixer.model import SessionRetrievalModel
from trainer.training import dropout_generators

NUM_ITEMS = 400


def _batch(batch_size=24, length=8, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, length + 1, batch_size)
  items = np.zeros([batch_size, length], np.int32)
  for row, n in enumerate(lengths):
    items[row, length - n:] = rng.integers(1, NUM_ITEMS + 1, n)
  return {"items": tf.constant(items),
          "target": tf.constant(rng.integers(1, NUM_ITEMS + 1, batch_size), tf.int32)}


def _model(**options):
  tf.keras.backend.experimental.enable_tf_random_generator()
  tf.keras.utils.set_random_seed(3)
  model = SessionRetrievalModel(ModelConfig(embedding_dim=32, num_heads=4, **options), NUM_ITEMS)
  model.create_weights(8, seed=5)
  return model


def _both_ways(model, batch, loss_weight=0.5, l2=1e-3, jit_compile=True):
  """(fast loss, fast grads), (autodiff loss, autodiff grads), from the same dropout masks."""
  variables = model.trainable_variables
  generators = dropout_generators(model)
  states = [tf.identity(g.state) for g in generators]

  @tf.function(jit_compile=jit_compile)
  def autodiff():
    with tf.GradientTape() as tape:
      loss = model.compute_loss(batch, training=True)
      weighted = loss * loss_weight
    grads = tape.gradient(weighted, variables)
    return loss, [tf.convert_to_tensor(g) + l2 * v for g, v in zip(grads, variables)]

  fast = model.full_softmax_gradients(batch, variables, loss_weight=loss_weight, l2=l2,
                                      jit_compile=jit_compile)
  for generator, state in zip(generators, states):
    generator.state.assign(state)
  return fast, autodiff()


def _relative_error(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.mark.parametrize("options,batch_size", [
    ({}, 24),  # the paper's defaults: every dropout on, normalised scores; batch < dim
    ({}, 48),  # batch > dim: the normalisation's projections summed over dim, not the batch
    (dict(table_dropout=0.0, dropout=0.0, attention_dropout=0.0), 24),
    (dict(normalize=False, scale=1.0), 24),  # SR-GNN's unnormalised scores
    (dict(encoder="srgnn"), 24),
])
def test_float32_gradients_match_autodiff_to_1e5(options, batch_size):
  model = _model(**options)
  (loss, grads), (reference_loss, reference_grads) = _both_ways(model, _batch(batch_size))
  np.testing.assert_allclose(loss.numpy(), reference_loss.numpy(), rtol=1e-5)
  assert len(grads) == len(reference_grads)
  for variable, grad, reference in zip(model.trainable_variables, grads, reference_grads):
    assert grad.shape == reference.shape, variable.name
    assert _relative_error(grad, reference) < 1e-5, variable.name


def test_without_xla_too():
  model = _model()
  (loss, grads), (reference_loss, reference_grads) = _both_ways(model, _batch(),
                                                                jit_compile=False)
  np.testing.assert_allclose(loss.numpy(), reference_loss.numpy(), rtol=1e-5)
  for grad, reference in zip(grads, reference_grads):
    assert _relative_error(grad, reference) < 1e-5


@pytest.mark.parametrize("variant", ["attenmixer", "attenmixer_ip"])
def test_a_batch_cut_to_its_longest_session_trains_alike(variant):
  """`length_multiple`: the loss and gradients of a batch without its all-padding columns are
  those of the whole batch, dropout masks included (they are drawn from the session's end)."""
  options = {} if variant == "attenmixer" else dict(level_selection="earliest")
  model = _model(**options)
  batch = _batch(batch_size=24, length=5)
  whole = {**batch, "items": tf.pad(batch["items"], [[0, 0], [3, 0]])}
  generators = dropout_generators(model)
  states = [tf.identity(g.state) for g in generators]
  loss, grads = model.full_softmax_gradients(whole, model.trainable_variables)
  for generator, state in zip(generators, states):
    generator.state.assign(state)
  cut_loss, cut_grads = model.full_softmax_gradients(batch, model.trainable_variables)
  np.testing.assert_allclose(cut_loss.numpy(), loss.numpy(), rtol=1e-5)
  for variable, grad, reference in zip(model.trainable_variables, cut_grads, grads):
    assert _relative_error(grad, reference) < 1e-5, variable.name


def test_the_check_can_fail():
  """Different dropout masks give different gradients: the comparison above is not vacuous."""
  model = _model()
  batch = _batch()
  _, first = model.full_softmax_gradients(batch, model.trainable_variables)
  _, second = model.full_softmax_gradients(batch, model.trainable_variables)
  assert _relative_error(first[0], second[0]) > 1e-3


def test_bfloat16_gradients_close_to_float32_autodiff():
  """bfloat16 products and softmax: the table's gradient within 2% of float32 (max-relative),
  the loss within 1%; the same masks as the float32 reference."""
  model = _model()
  batch = _batch(batch_size=64)
  _, (reference_loss, reference_grads) = _both_ways(model, batch)
  tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    fast_model = _model()
    fast_model.set_weights(model.get_weights())
    loss, grads = fast_model.full_softmax_gradients(batch, fast_model.trainable_variables,
                                                    loss_weight=0.5, l2=1e-3)
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
  np.testing.assert_allclose(loss.numpy(), reference_loss.numpy(), rtol=1e-2)
  table_index = [i for i, v in enumerate(model.trainable_variables)
                 if v is model.encoder.item_table][0]
  assert _relative_error(grads[table_index], reference_grads[table_index]) < 2e-2
  for grad, reference in zip(grads, reference_grads):
    assert _relative_error(grad, reference) < 5e-2


def test_needs_full_softmax_and_the_table():
  model = _model(loss="sampled_softmax")
  with pytest.raises(ValueError, match="full_softmax"):
    model.full_softmax_gradients(_batch(), model.trainable_variables)
  model = _model()
  with pytest.raises(ValueError, match="item table"):
    model.full_softmax_gradients(_batch(), model.trainable_variables[1:])


def test_two_trainers_in_one_process_do_not_share_a_table(synthetic_prepared, tmp_path):
  """A second trainer's first step computes its own model's loss, after a first trainer has
  trained (a tf.function traced with one model's table must not be reused for another's)."""
  from trainer.cluster import TaskInfo  # pylint: disable=g-import-not-at-top
  from trainer.config import build_config  # pylint: disable=g-import-not-at-top
  from trainer.strategy import create_strategy  # pylint: disable=g-import-not-at-top
  from trainer.training import Trainer  # pylint: disable=g-import-not-at-top
  config = build_config("synthetic", model_overrides=dict(
      dropout=0.0, attention_dropout=0.0, table_dropout=0.0))

  def trainer(name):
    return Trainer(config, synthetic_prepared, str(tmp_path / name), create_strategy("mirrored"),
                   TaskInfo("worker", 0, 1, True))

  first = trainer("first")
  batches = iter(first._distributed("train", training=True))  # pylint: disable=protected-access
  for _ in range(20):
    first._train_step(batches)  # pylint: disable=protected-access
  second = trainer("second")
  batches = iter(second._distributed("train", training=True))  # pylint: disable=protected-access
  batch = next(iter(second._distributed("train", training=True)))  # pylint: disable=protected-access
  expected = second.model.compute_loss(batch, training=True).numpy()
  np.testing.assert_allclose(second._train_step(batches).numpy(), expected, rtol=1e-5)  # pylint: disable=protected-access


def test_unbounded_scores_keep_a_finite_loss():
  """Unnormalised scores far apart: the target's softmax probability underflows to 0, the loss
  must still be the finite cross-entropy."""
  from tfrs_attenmixer import catalogue_softmax  # pylint: disable=g-import-not-at-top
  queries = tf.constant([[100.0, 0.0], [0.0, 1.0]])
  rows = tf.constant([[10.0, 0.0], [-10.0, 0.0], [0.0, 1.0]])
  targets = tf.constant([2, 3])
  per_example = catalogue_softmax.softmax_products(queries, rows, targets, 1.0,
                                                   bounded=False)[0].numpy()
  logits = queries.numpy() @ rows.numpy().T
  expected = [np.logaddexp.reduce(row) - row[t - 1] for row, t in zip(logits, [2, 3])]
  np.testing.assert_allclose(per_example, expected, rtol=1e-6)
  assert per_example[0] == pytest.approx(2000.0)
