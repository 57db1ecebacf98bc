"""The top-K indexes of `tfrs_attenmixer.topk` against exact search, on small clustered data."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_attenmixer import topk

NUM_ITEMS, DIM = 3000, 32


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
  """Clustered unit candidates [3000, 32] and queries near them [200, 32], exact top-20 rows."""
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(60, DIM))
  candidates = _unit(centers[rng.integers(0, 60, NUM_ITEMS)] + 0.4 * rng.normal(size=(NUM_ITEMS, DIM)))
  queries = _unit(candidates[rng.integers(0, NUM_ITEMS, 200)] + 0.3 * rng.normal(size=(200, DIM)))
  exact = np.argsort(-(queries @ candidates.T), axis=1, kind="stable")[:, :20]
  return candidates, queries, exact


def test_brute_force_is_exact(data):
  candidates, queries, exact = data
  scores, rows = topk.build_index("brute_force", candidates)(queries, k=20)
  np.testing.assert_array_equal(rows.numpy(), exact)
  np.testing.assert_allclose(scores.numpy(), np.take_along_axis(queries @ candidates.T, exact, 1),
                             rtol=1e-5, atol=1e-6)


def test_brute_force_holds_the_table_transposed(data):
  candidates, _, _ = data
  index = topk.build_index("brute_force", candidates)
  np.testing.assert_array_equal(index._candidates.numpy(), candidates.T)  # pylint: disable=protected-access


def test_brute_force_returns_identifiers_and_checks_shapes(data):
  candidates, queries, exact = data
  names = tf.constant([f"item-{row}" for row in range(len(candidates))])
  _, identified = topk.build_index("brute_force", candidates, names)(queries[:3], k=5)
  np.testing.assert_array_equal(identified.numpy().astype(str),
                                np.char.add("item-", exact[:3, :5].astype(str)))
  with pytest.raises(ValueError, match="same number of rows"):
    topk.build_index("brute_force", candidates, names[:10])
  with pytest.raises(ValueError, match="must be 2D"):
    topk.build_index("brute_force", candidates[0])


@pytest.mark.parametrize("kind", ["portable_ann", "scann"])
def test_approximate_indexes_default_options_recall(data, kind):
  """Target: recall@20 >= 0.95 with the default options (Gowalla-scale numbers: results/)."""
  candidates, queries, exact = data
  index = topk.build_index(kind, candidates)
  scores, rows = index(queries, k=tf.constant(20))
  assert rows.shape == (200, 20) and rows.dtype == tf.int32
  assert topk.retrieval_recall(rows.numpy(), exact) >= 0.95
  # Scores are the exact dot products of the returned rows, best first.
  np.testing.assert_allclose(
      scores.numpy(), np.sum(queries[:, None, :] * candidates[rows.numpy()], -1), atol=1e-5)
  assert np.all(np.diff(scores.numpy(), axis=1) <= 1e-6)


def test_portable_ann_searching_every_partition_is_exact(data):
  candidates, queries, exact = data
  index = topk.build_index("portable_ann", candidates, num_partitions=30,
                           num_partitions_to_search=30)
  _, rows = index(queries, k=20)
  assert topk.retrieval_recall(rows.numpy(), exact) == 1.0


def test_short_results_are_padded_and_identifiers_returned(data):
  candidates, queries, _ = data
  identifiers = tf.constant(np.arange(100, 100 + 50), tf.int64)
  index = topk.PortableANN(k=5, num_partitions=10, num_partitions_to_search=1).index(
      candidates[:50], identifiers)
  scores, ids = index(queries[:3], k=40)  # one partition holds at most 8 (1.5 x 50 / 10)
  assert scores.shape == (3, 40) and ids.dtype == tf.int64
  real = np.isfinite(scores.numpy())
  assert real.sum(axis=1).max() <= 8 and real.all(axis=1).sum() == 0
  assert np.all(ids.numpy()[~real] == -1) and np.all((ids.numpy()[real] >= 100))
  scann = topk.build_index("scann", candidates[:50], num_leaves=5, num_leaves_to_search=1,
                           num_reordering_candidates=10)
  scores, rows = scann(queries[:3], k=30)
  assert scores.shape == (3, 30) and np.all(rows.numpy()[~np.isfinite(scores.numpy())] == -1)


def test_balanced_assignment_respects_capacity():
  rng = np.random.default_rng(1)
  # Lopsided data: most vectors near one direction.
  vectors = _unit(np.concatenate([rng.normal(size=(900, 8)) * 0.1 + 1.0,
                                  rng.normal(size=(100, 8))]))
  centroids = topk.spherical_kmeans(vectors, 10, iterations=5)
  assignment = topk.balanced_assignment(vectors, centroids, capacity=120)
  assert assignment.min() >= 0 and np.bincount(assignment, minlength=10).max() <= 120
  with pytest.raises(ValueError, match="cannot hold"):
    topk.balanced_assignment(vectors, centroids, capacity=99)


def test_options_are_checked():
  with pytest.raises(ValueError, match="index must be one of"):
    topk.default_options("annoy", 100)
  with pytest.raises(ValueError, match="max_partition_factor"):
    topk.PortableANN(max_partition_factor=0.5)
  with pytest.raises(ValueError, match="index. method must be called"):
    topk.PortableANN()(tf.zeros([1, 4]))


def test_retrieval_recall():
  assert topk.retrieval_recall([[1, 2], [3, 4]], [[2, 1], [3, 5]]) == 0.75


def test_portable_ann_batch_strategies_agree(data):
  """Small batches gather the probed partitions, large ones score all: same answers."""
  candidates, queries, _ = data
  index = topk.build_index("portable_ann", candidates, num_partitions=40,
                           num_partitions_to_search=4)
  large = index(queries[:20], k=20)  # 20 * 4 >= 40 partitions: one matmul
  small = [index(queries[i:i + 1], k=20) for i in range(20)]  # gathers
  np.testing.assert_array_equal(large[1].numpy(), np.concatenate([r.numpy() for _, r in small]))
  np.testing.assert_allclose(large[0].numpy(), np.concatenate([s.numpy() for s, _ in small]),
                             rtol=1e-5, atol=1e-6)


def test_the_tfrs_private_members_we_rely_on_are_there():
  """Fails, naming the member, when a TFRS release renames or drops one (topk.py's overrides)."""
  topk.check_tfrs_members()


def test_a_missing_tfrs_member_is_named():
  import types
  import tensorflow_recommenders as tfrs

  class BruteForce(tfrs.layers.factorized_top_k.TopK):
    """TFRS's layer as a release might change it: `_candidates` renamed."""

    def index(self, candidates, identifiers=None):
      self._table = candidates
      self._identifiers = identifiers

    def call(self, queries, k=None):
      return self._compute_score(queries, self._table), self._identifiers, self._k

  changed = types.SimpleNamespace(TopK=tfrs.layers.factorized_top_k.TopK, BruteForce=BruteForce,
                                  ScaNN=tfrs.layers.factorized_top_k.ScaNN)
  with pytest.raises(AttributeError, match="BruteForce no longer sets _candidates"):
    topk.check_tfrs_members(changed)
  changed.BruteForce = tfrs.layers.factorized_top_k.BruteForce
  topk.check_tfrs_members(changed)
  del changed.ScaNN
  with pytest.raises(AttributeError, match="has no ScaNN"):
    topk.check_tfrs_members(changed)
