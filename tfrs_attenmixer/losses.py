"""Training losses of the retrieval model: full softmax and sampled softmax with logQ correction.

Both return the per-replica share of the global batch mean (`tf.nn.compute_average_loss`), so
gradients summed across `tf.distribute` replicas are those of the global mean; without a strategy
the value is the batch mean.
"""

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs


def full_softmax_loss(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
  """Cross-entropy of the true item against the whole catalogue (the paper's loss).

  Args:
    logits: float [batch, N]; column j scores item j + 1 (padding is not a column).
    targets: int [batch] true item ids in 1..N.

  Returns:
    Scalar loss.
  """
  per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=tf.cast(targets, tf.int32) - 1, logits=tf.cast(logits, tf.float32))
  return tf.nn.compute_average_loss(per_example)


class SampledSoftmaxLoss(tf.keras.layers.Layer):
  """Sampled softmax over the batch's targets and/or uniform negatives, via `tfrs.tasks.Retrieval`.

  Candidates are the batch's `B` targets followed by `M` items drawn uniformly (with replacement)
  from 1..N and shared by the batch. Query `i`'s positive is candidate `i`. With
  `in_batch_negatives` the other targets are negatives too; otherwise they are masked out.
  Candidates with the same id as a query's positive are removed (accidental hits).

  logQ correction: every logit `sigma * cos` is reduced by `log q(item)`, the probability that one
  candidate slot holds the item, `q = (B_neg * p(item) + M / N) / (B_neg + M)` with `B_neg = B`
  when in-batch negatives are on (else 0) and `p` the target distribution given by `item_counts`
  (uniform when absent). `tfrs` clips `q` to [1e-6, 1].
  """

  def __init__(self,
               num_items: int,
               scale: float,
               in_batch_negatives: bool = True,
               num_uniform_negatives: int = 0,
               item_counts: Optional[Sequence[float]] = None,
               **kwargs):
    """Initialises the loss.

    Args:
      num_items: N; item ids are 1..N.
      scale: sigma, the scale of the cosine scores (the softmax temperature is 1 / sigma).
      in_batch_negatives: use the batch's other targets as negatives.
      num_uniform_negatives: M, uniformly sampled negatives per batch.
      item_counts: optional [N + 1] training frequencies of the target items (index 0 ignored),
        for the logQ correction of in-batch negatives.
      **kwargs: base layer arguments.
    """
    super().__init__(**kwargs)
    if not in_batch_negatives and num_uniform_negatives < 1:
      raise ValueError("SampledSoftmaxLoss needs in-batch or uniform negatives.")
    self.num_items = num_items
    self.in_batch_negatives = in_batch_negatives
    self.num_uniform_negatives = num_uniform_negatives
    if item_counts is None:
      probabilities = np.full([num_items + 1], 1.0 / num_items)
    else:
      counts = np.asarray(item_counts, np.float64)
      if counts.shape != (num_items + 1,) or (counts < 0).any() or counts[1:].sum() <= 0:
        raise ValueError(f"item_counts must be {num_items + 1} non-negative counts with a "
                         f"positive total; got shape {counts.shape}.")
      probabilities = counts / counts[1:].sum()
    probabilities[0] = 0.0
    self._target_probabilities = tf.constant(probabilities, tf.float32)
    self._task = tfrs.tasks.Retrieval(
        loss=tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
        temperature=1.0 / scale,
        remove_accidental_hits=True)

  def candidate_ids(self, targets: tf.Tensor) -> tf.Tensor:
    """The candidate item ids [B + M]: the targets, then M uniform draws from 1..N."""
    targets = tf.cast(targets, tf.int32)
    negatives = tf.random.uniform([self.num_uniform_negatives], 1, self.num_items + 1, tf.int32)
    return tf.concat([targets, negatives], axis=0)

  def call(self, queries: tf.Tensor, candidates: tf.Tensor,
           candidate_ids: tf.Tensor) -> tf.Tensor:
    """Scalar loss from queries [B, d], candidate vectors [B + M, d] and `candidate_ids`."""
    batch = tf.shape(queries)[0]
    in_batch = tf.cast(batch if self.in_batch_negatives else 0, tf.float32)
    uniform = float(self.num_uniform_negatives)
    probability = ((in_batch * tf.gather(self._target_probabilities, candidate_ids) +
                    uniform / self.num_items) / (in_batch + uniform))
    score_mask = None
    if not self.in_batch_negatives:
      score_mask = tf.concat([tf.eye(batch, dtype=tf.bool),
                              tf.ones([batch, self.num_uniform_negatives], tf.bool)], axis=1)
    per_example = self._task(
        tf.cast(queries, tf.float32),
        tf.cast(candidates, tf.float32),
        candidate_sampling_probability=probability,
        candidate_ids=candidate_ids,
        compute_metrics=False,
        compute_batch_metrics=False,
        score_mask=score_mask)
    return tf.nn.compute_average_loss(per_example)
