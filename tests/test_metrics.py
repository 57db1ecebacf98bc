"""Ranking metrics: ranks, HR/MRR/NDCG against NumPy, batching, weights, tfrs FactorizedTopK."""

import numpy as np
import pytest

import tfrs_attenmixer as tam
import tensorflow as tf
import tensorflow_recommenders as tfrs


def numpy_metrics(scores, targets, k):
  """HR@k, MRR@k, NDCG@k by sorting (rank = position of the target in a stable descending
  argsort, where ties cannot occur with continuous random scores)."""
  order = np.argsort(-scores, axis=1, kind="stable")
  ranks = np.array([np.where(order[i] == targets[i] - 1)[0][0] + 1 for i in range(len(targets))])
  inside = ranks <= k
  return inside.mean(), (inside / ranks).mean(), (inside / np.log2(ranks + 1)).mean(), ranks


def test_target_ranks():
  scores = np.array([[0.1, 0.9, 0.5, 0.5], [3.0, 2.0, 1.0, 0.0]], np.float32)
  # Targets are ids 1..N; column j is item j + 1.
  np.testing.assert_array_equal(tam.target_ranks(scores, [3, 1]), [2, 1])
  np.testing.assert_array_equal(tam.target_ranks(scores, [1, 4]), [4, 4])
  # Ties count in favour of the true item (strictly higher only).
  np.testing.assert_array_equal(tam.target_ranks(scores, [4, 2]), [2, 2])


def test_metrics_over_batches_match_numpy():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(300, 50)).astype(np.float32)
  targets = rng.integers(1, 51, size=300)
  metrics = tam.ranking_metrics()
  assert [m.name for m in metrics] == [f"{kind}_at_{k}" for k in (5, 10, 20)
                                       for kind in ("hr", "mrr", "ndcg")]
  for start in range(0, 300, 70):  # uneven batches
    ranks = tam.target_ranks(scores[start:start + 70], targets[start:start + 70])
    for metric in metrics:
      metric.update_state(ranks)
  for k in (5, 10, 20):
    hr, mrr, ndcg, _ = numpy_metrics(scores, targets, k)
    results = {m.name: m.result().numpy() for m in metrics}
    np.testing.assert_allclose(
        [results[f"hr_at_{k}"], results[f"mrr_at_{k}"], results[f"ndcg_at_{k}"]], [hr, mrr, ndcg],
        rtol=1e-12)
  assert 0 < results["mrr_at_5"] < results["ndcg_at_5"] < results["hr_at_5"] < 1
  for metric in metrics:
    metric.reset_state()
    assert metric.result().numpy() == 0


def test_sample_weights():
  metric = tam.MRR(10)
  metric.update_state(tf.constant([1, 2, 30]), sample_weight=[1.0, 3.0, 0.0])
  np.testing.assert_allclose(metric.result().numpy(), (1 + 3 * 0.5) / 4)


def test_hit_rate_agrees_with_tfrs_factorized_top_k():
  rng = np.random.default_rng(1)
  num_items, dim = 40, 6
  queries = rng.normal(size=(64, dim)).astype(np.float32)
  table = rng.normal(size=(num_items + 1, dim)).astype(np.float32)  # row 0: padding
  targets = rng.integers(1, num_items + 1, size=64)
  candidates = tf.data.Dataset.from_tensor_slices(
      (tf.range(1, num_items + 1), table[1:])).batch(16)
  top_k = tfrs.metrics.FactorizedTopK(candidates=candidates, ks=(5, 10, 20))
  top_k.update_state(queries, table[targets], true_candidate_ids=tf.constant(targets, tf.int32))
  expected = [r.numpy() for r in top_k.result()]
  ranks = tam.target_ranks(queries @ table[1:].T, targets)
  ours = []
  for k in (5, 10, 20):
    metric = tam.HitRate(k)
    metric.update_state(ranks)
    ours.append(metric.result().numpy())
  np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_config_round_trip_and_serialization():
  metric = tam.NDCG(7, name="my_ndcg")
  clone = tam.NDCG.from_config(metric.get_config())
  assert clone.k == 7 and clone.name == "my_ndcg"
  restored = tf.keras.metrics.deserialize(tf.keras.metrics.serialize(metric))
  assert isinstance(restored, tam.NDCG) and restored.k == 7


@pytest.mark.parametrize("cls, gain", [(tam.HitRate, lambda r: 1.0), (tam.MRR, lambda r: 1 / r),
                                       (tam.NDCG, lambda r: 1 / np.log2(r + 1))])
def test_gain_is_zero_outside_top_k(cls, gain):
  metric = cls(3)
  metric.update_state(tf.constant([1, 3, 4, 100]))
  np.testing.assert_allclose(metric.result().numpy(), (gain(1.0) + gain(3.0)) / 4)
