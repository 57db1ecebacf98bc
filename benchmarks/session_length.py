"""HR@K and MRR@K by session length: the paper's Figure 7 (short <= 5 < long, and each length).

    from benchmarks.session_length import evaluate_by_length
    by_length = evaluate_by_length(model, prepared, "test", max_length=config.train.max_length)

The length of an example is the number of items of its session prefix (the model's input), as
seen by the model: prefixes longer than `max_length` count as `max_length`, which changes no
group below. The true item is ranked among all items, as in `tfrs_attenmixer.metrics`.
"""

from typing import Dict, Iterable, Mapping, Tuple

import numpy as np

SHORT_MAX = 5
LENGTHS = tuple(range(1, 11))
GROUPS = (f"short (<= {SHORT_MAX})", f"long (> {SHORT_MAX})", *map(str, LENGTHS))


def group_masks(lengths: np.ndarray) -> Dict[str, np.ndarray]:
  """Boolean masks over examples, one per group of `GROUPS`, in that order."""
  masks = [lengths <= SHORT_MAX, lengths > SHORT_MAX] + [lengths == n for n in LENGTHS]
  return dict(zip(GROUPS, masks))


def metrics_by_length(ranks: np.ndarray, lengths: np.ndarray,
                      k: int = 20) -> Dict[str, Dict[str, float]]:
  """HR@k and MRR@k (in %) and the number of examples of each length group.

  Args:
    ranks: int [n] 1-based ranks of the true items.
    lengths: int [n] session prefix lengths.
    k: the cut-off.

  Returns:
    `{group: {"examples": count, "hr_at_<k>": %, "mrr_at_<k>": %}}`; a group without examples
    has None metrics.
  """
  ranks = np.asarray(ranks, np.float64)
  hits = ranks <= k
  reciprocal = np.where(hits, 1.0 / ranks, 0.0)
  result = {}
  for group, mask in group_masks(np.asarray(lengths)).items():
    count = int(mask.sum())
    result[group] = {"examples": count,
                     f"hr_at_{k}": float(100.0 * hits[mask].mean()) if count else None,
                     f"mrr_at_{k}": float(100.0 * reciprocal[mask].mean()) if count else None}
  return result


def ranks_and_lengths(model, batches: Iterable[Mapping]) -> Tuple[np.ndarray, np.ndarray]:
  """Full-catalogue ranks of the true items, and prefix lengths, over batches of examples.

  Args:
    model: a `SessionRetrievalModel` (anything with `__call__(items, training)` giving session
      vectors and `catalogue_logits(vectors)` giving [batch, N] scores of items 1..N).
    batches: `{"items": int [b, max_length] left-padded with 0, "target": int [b]}`.

  Returns:
    `(ranks, lengths)`, int arrays over all examples.
  """
  # pylint: disable=g-import-not-at-top  (TensorFlow only when a model is evaluated)
  import tensorflow as tf
  from tfrs_attenmixer.metrics import target_ranks

  @tf.function
  def rank(items, targets):
    return target_ranks(model.catalogue_logits(model(items, training=False)), targets)

  ranks, lengths = [], []
  for batch in batches:
    items = tf.convert_to_tensor(batch["items"], tf.int32)
    ranks.append(rank(items, tf.convert_to_tensor(batch["target"], tf.int32)).numpy())
    lengths.append(tf.math.count_nonzero(items, axis=1).numpy())
  return np.concatenate(ranks), np.concatenate(lengths)


def evaluate_by_length(model, prepared, split: str, max_length: int, batch_size: int = 500,
                       k: int = 20) -> Dict[str, Dict[str, float]]:
  """`metrics_by_length` of a model on a split of a `PreparedDataset` (see the module doc)."""
  from data.pipeline import InputConfig, make_dataset  # pylint: disable=g-import-not-at-top
  dataset = make_dataset(prepared, split, InputConfig(batch_size=batch_size,
                                                      max_length=max_length), training=False)
  return metrics_by_length(*ranks_and_lengths(model, dataset), k=k)
