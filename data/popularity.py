"""Item popularity: how often each item is clicked in one split of a prepared dataset.

Serving answers sessions with no known item by the most popular training items, so the exported
SavedModel stores these counts (see `trainer.export`).
"""

import numpy as np
import tensorflow as tf

from data.prepared import PreparedDataset
from data.tfrecord import parse_sessions


def item_counts(prepared: PreparedDataset, split: str = "train") -> np.ndarray:
  """Clicks per item index in `split`: int64 [N + 1], entry i for index i (entry 0 is 0)."""
  counts = np.zeros(prepared.num_items + 1, np.int64)
  files = prepared.files(split)
  if not files:
    return counts
  clicks = tf.data.TFRecordDataset(files).batch(4096).map(
      lambda serialized: parse_sessions(serialized).flat_values)
  for batch in clicks.as_numpy_iterator():
    counts += np.bincount(batch, minlength=prepared.num_items + 1)
  counts[0] = 0
  return counts


def most_popular(counts: np.ndarray) -> np.ndarray:
  """Item indices (>= 1) by decreasing count, ties by increasing index: int64 [N]."""
  counts = np.asarray(counts)[1:]
  return np.lexsort((np.arange(counts.size), -counts)).astype(np.int64) + 1
