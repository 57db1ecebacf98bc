"""The TFRecord schema of prepared session data.

One `tf.train.Example` per session:

| feature | type | meaning |
|---|---|---|
| `items` | int64 list | the session's item indices (vocabulary indices >= 1) in click order |
| `session_index` | int64 | the session's position in its split (time order) |

Sessions are stored whole; `data.examples` expands them into prefix examples on the fly, so the
files stay small and the maximum prefix length can change without re-preparing the data.
"""

from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from data.atomic import atomic_output
from data.prepared import file_sha256

ITEMS_FEATURE = "items"
SESSION_INDEX_FEATURE = "session_index"

_FEATURES = {
    ITEMS_FEATURE: tf.io.RaggedFeature(tf.int64),
    SESSION_INDEX_FEATURE: tf.io.FixedLenFeature([], tf.int64),
}


def serialize_session(items: Sequence[int], session_index: int) -> bytes:
  features = tf.train.Features(feature={
      ITEMS_FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(value=list(items))),
      SESSION_INDEX_FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(value=[session_index])),
  })
  return tf.train.Example(features=features).SerializeToString()


def parse_sessions(serialized: tf.Tensor) -> tf.RaggedTensor:
  """Parses a batch of serialized examples into int32 sessions `[batch, (length)]`."""
  parsed = tf.io.parse_example(serialized, _FEATURES)
  return tf.cast(parsed[ITEMS_FEATURE], tf.int32)


def write_shards(sessions: Sequence[Sequence[int]], directory: str, split: str,
                 num_shards: int, min_prefix_length: int) -> List[Dict]:
  """Writes `sessions` as `num_shards` files `{split}-NNNNN-of-NNNNN.tfrecord` in `directory`.

  Shards hold contiguous blocks of sessions, so reading them in order gives the time order.
  Each file is written under a temporary name and renamed when complete.

  Returns:
    One manifest entry per shard: file name, numbers of sessions and of prefix examples (prefixes
    of at least `min_prefix_length` items), sha256 of the file.
  """
  num_shards = max(1, min(num_shards, len(sessions)))
  entries = []
  for shard, indices in enumerate(np.array_split(np.arange(len(sessions)), num_shards)):
    name = f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
    path = f"{directory}/{name}"
    with atomic_output(path) as temporary:
      with tf.io.TFRecordWriter(temporary) as writer:
        for index in indices:
          writer.write(serialize_session(sessions[index], int(index)))
    entries.append({
        "file": name,
        "sessions": len(indices),
        "examples": int(sum(max(len(sessions[i]) - min_prefix_length, 0) for i in indices)),
        "sha256": file_sha256(path),
    })
  return entries
