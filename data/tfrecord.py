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
  """One session's `tf.train.Example`, its features in name order: deterministic serialization,
  so the bytes do not depend on the process (protobuf orders map entries by a per-process hash
  otherwise)."""
  features = tf.train.Features(feature={
      ITEMS_FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(value=list(items))),
      SESSION_INDEX_FEATURE: tf.train.Feature(int64_list=tf.train.Int64List(value=[session_index])),
  })
  return tf.train.Example(features=features).SerializeToString(deterministic=True)


def parse_sessions(serialized: tf.Tensor) -> tf.RaggedTensor:
  """Parses a batch of serialized examples into int32 sessions `[batch, (length)]`."""
  parsed = tf.io.parse_example(serialized, _FEATURES)
  return tf.cast(parsed[ITEMS_FEATURE], tf.int32)


def shard_sizes(num_sessions: int, num_shards: int) -> List[int]:
  """Sessions per shard of a split: `min(num_shards, num_sessions)` shards (at least one), the
  blocks of `np.array_split`."""
  count = max(1, min(num_shards, num_sessions))
  return [len(block) for block in np.array_split(np.arange(num_sessions), count)]


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


class ShardWriter:
  """Writes one split's sessions, given one at a time in order, as `write_shards` writes them.

  The number of sessions is known in advance, so shard `k` holds the `k`-th block of
  `np.array_split`. Each shard is written under a temporary name and renamed when complete;
  `close()` returns the manifest entries (see `write_shards`).

  Raises:
    ValueError: more or fewer sessions written than announced (at `close`, or at `write`).
  """

  def __init__(self, directory: str, split: str, num_sessions: int, num_shards: int,
               min_prefix_length: int):
    self.directory, self.split, self.num_sessions = directory, split, num_sessions
    self.min_prefix_length = min_prefix_length
    self._sizes = shard_sizes(num_sessions, num_shards)
    self.num_shards = len(self._sizes)
    self._entries: List[Dict] = []
    self._index = 0
    self._open = None

  def _start_shard(self) -> None:
    name = shard_name(self.split, len(self._entries), self.num_shards)
    output = atomic_output(f"{self.directory}/{name}")
    temporary = output.__enter__()  # pylint: disable=unnecessary-dunder-call
    self._open = {"name": name, "output": output, "writer": tf.io.TFRecordWriter(temporary),
                  "sessions": 0, "examples": 0}

  def _finish_shard(self) -> None:
    shard, self._open = self._open, None
    shard["writer"].close()
    shard["output"].__exit__(None, None, None)
    self._entries.append({
        "file": shard["name"], "sessions": shard["sessions"], "examples": shard["examples"],
        "sha256": file_sha256(f"{self.directory}/{shard['name']}"),
    })

  def write(self, items: Sequence[int]) -> None:
    """Appends one session (item indices)."""
    if self._index >= self.num_sessions:
      raise ValueError(f"{self.split}: more than the {self.num_sessions} sessions announced")
    if self._open is None:
      self._start_shard()
    self._open["writer"].write(serialize_session(items, self._index))
    self._open["sessions"] += 1
    self._open["examples"] += max(len(items) - self.min_prefix_length, 0)
    self._index += 1
    if self._open["sessions"] == self._sizes[len(self._entries)]:
      self._finish_shard()

  def close(self) -> List[Dict]:
    """Finishes the last shard; returns one manifest entry per shard."""
    if self._index != self.num_sessions:
      raise ValueError(f"{self.split}: {self._index} sessions written, {self.num_sessions} "
                       "announced")
    while len(self._entries) < self.num_shards:  # an empty split still has its one shard
      self._start_shard()
      self._finish_shard()
    return self._entries

  def abort(self) -> None:
    """Removes the shard being written (after an error)."""
    if self._open is not None:
      self._open["writer"].close()
      self._open["output"].__exit__(ValueError, ValueError("aborted"), None)
      self._open = None


def write_shards(sessions: Sequence[Sequence[int]], directory: str, split: str,
                 num_shards: int, min_prefix_length: int) -> List[Dict]:
  """Writes `sessions` as `num_shards` files `{split}-NNNNN-of-NNNNN.tfrecord` in `directory`.

  Shards hold contiguous blocks of sessions, so reading them in order gives the time order.
  Each file is written under a temporary name and renamed when complete.

  Returns:
    One manifest entry per shard: file name, numbers of sessions and of prefix examples (prefixes
    of at least `min_prefix_length` items), sha256 of the file.
  """
  writer = ShardWriter(directory, split, len(sessions), num_shards, min_prefix_length)
  for session in sessions:
    writer.write(session)
  return writer.close()
