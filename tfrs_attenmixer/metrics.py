"""Full-catalogue ranking metrics: HR@K, MRR@K and NDCG@K from the rank of the true item.

The rank of the true item is 1 + the number of catalogue items scoring strictly higher
(`target_ranks`); padding is not a column of the score matrix, so it is never ranked. Each metric
is the mean over examples of a gain of that rank, 0 beyond K:

  HR@K   = 1[rank <= K]
  MRR@K  = 1[rank <= K] / rank
  NDCG@K = 1[rank <= K] / log2(rank + 1)

Sums and counts are metric variables aggregated by SUM, so results are exact over many batches and
`tf.distribute` replicas. Results are fractions; callers report percentages.
"""

from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

KS = (5, 10, 20)


def target_ranks(scores: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
  """1-based rank of each true item among all items.

  Args:
    scores: float [batch, N]; column j scores item j + 1.
    targets: int [batch] true item ids in 1..N.

  Returns:
    int32 [batch] ranks (ties with the true item count in its favour).
  """
  true_scores = tf.gather(scores, tf.cast(targets, tf.int32) - 1, axis=1, batch_dims=1)
  higher = tf.cast(scores > true_scores[:, None], tf.int32)
  return 1 + tf.reduce_sum(higher, axis=1)


class RankMetric(tf.keras.metrics.Metric):
  """Mean over examples of `gain(rank)` for ranks <= k, 0 otherwise (see module docstring)."""

  prefix = ""

  def __init__(self, k: int, name: Optional[str] = None, dtype: Any = tf.float64):
    """Initialises the metric; its default name is `<prefix>_at_<k>`. float64 sums by default."""
    super().__init__(name=name or f"{self.prefix}_at_{k}", dtype=dtype)
    self.k = k
    self.total = self.add_weight("total", shape=[], initializer="zeros")
    self.count = self.add_weight("count", shape=[], initializer="zeros")

  def gain(self, ranks: tf.Tensor) -> tf.Tensor:
    """The gain of float ranks inside the top k."""
    raise NotImplementedError

  def update_state(self, ranks: tf.Tensor, sample_weight: Optional[tf.Tensor] = None):
    """Accumulates int ranks [batch] (from `target_ranks`), optionally weighted [batch]."""
    ranks = tf.cast(ranks, self.dtype)
    weights = (tf.ones_like(ranks) if sample_weight is None else tf.cast(sample_weight, self.dtype))
    gains = tf.where(ranks <= self.k, self.gain(ranks), tf.zeros_like(ranks))
    self.total.assign_add(tf.reduce_sum(gains * weights))
    self.count.assign_add(tf.reduce_sum(weights))

  def result(self) -> tf.Tensor:
    return tf.math.divide_no_nan(self.total, self.count)

  def get_config(self) -> Dict[str, Any]:
    return {**super().get_config(), "k": self.k}


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class HitRate(RankMetric):
  """HR@K (also Recall@K, P@K in session recommendation papers)."""

  prefix = "hr"

  def gain(self, ranks):
    return tf.ones_like(ranks)


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class MRR(RankMetric):
  """MRR@K: mean reciprocal rank, 0 outside the top K."""

  prefix = "mrr"

  def gain(self, ranks):
    return 1.0 / ranks


@tf.keras.utils.register_keras_serializable(package="tfrs_attenmixer")
class NDCG(RankMetric):
  """NDCG@K with one relevant item: 1 / log2(rank + 1), 0 outside the top K."""

  prefix = "ndcg"

  def gain(self, ranks):
    return tf.math.log(2.0 * tf.ones_like(ranks)) / tf.math.log(ranks + 1.0)


def ranking_metrics(ks: Sequence[int] = KS) -> List[RankMetric]:
  """HR, MRR and NDCG at each k: `hr_at_5`, `mrr_at_5`, `ndcg_at_5`, `hr_at_10`, ..."""
  return [metric(k) for k in ks for metric in (HitRate, MRR, NDCG)]
