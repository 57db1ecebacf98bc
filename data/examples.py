"""Turns sessions into next-item prediction examples.

A session `[v1, ..., vn]` yields one example per prefix: `([v1..vk], v(k+1))` for
`k = min_prefix_length .. n-1`. The input keeps the last `max_length` items of the prefix and is
LEFT-padded with 0, so the most recent click is always in the last column:

    session [5, 7, 9], max_length 4  ->  items [[0, 0, 0, 5], [0, 0, 5, 7]], target [7, 9]

The expansion is vectorised TensorFlow (no Python per session), so the same function serves the
`tf.data` pipeline (on batches of parsed sessions) and in-memory callers.
"""

from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

ITEMS = "items"
TARGET = "target"


def expand_ragged(sessions: tf.RaggedTensor,
                  max_length: int,
                  min_prefix_length: int = 1) -> Dict[str, tf.Tensor]:
  """Expands a batch of sessions into all their prefix examples.

  Args:
    sessions: int RaggedTensor `[num_sessions, (session_length)]` of item indices (> 0).
    max_length: number of most recent prefix items kept per example.
    min_prefix_length: shortest prefix that forms an example.

  Returns:
    `{"items": int32 [num_examples, max_length], "target": int32 [num_examples]}`, examples in
    session order, shortest prefix first within a session.
  """
  values = tf.cast(sessions.values, tf.int32)
  row_starts = tf.cast(sessions.row_starts(), tf.int32)
  lengths = tf.cast(sessions.row_lengths(), tf.int32)
  examples_per_session = tf.maximum(lengths - min_prefix_length, 0)
  session_of_example = tf.repeat(tf.range(tf.size(lengths)), examples_per_session)
  # Prefix length k of each example: min_prefix_length, min_prefix_length + 1, ... per session.
  first_example = tf.cumsum(examples_per_session, exclusive=True)
  k = (tf.range(tf.reduce_sum(examples_per_session)) -
       tf.gather(first_example, session_of_example) + min_prefix_length)
  start = tf.gather(row_starts, session_of_example)
  target = tf.gather(values, start + k)
  # Window positions k - max_length .. k - 1 of the session; negative ones are padding.
  offsets = k[:, None] - max_length + tf.range(max_length)[None, :]
  items = tf.where(offsets >= 0, tf.gather(values, start[:, None] + tf.maximum(offsets, 0)), 0)
  return {ITEMS: items, TARGET: target}


def expand_prefixes(sessions: Sequence[Sequence[int]],
                    max_length: int = 20,
                    min_prefix_length: int = 1) -> Dict[str, np.ndarray]:
  """In-memory version of `expand_ragged` for lists of sessions; returns NumPy arrays."""
  ragged = tf.ragged.constant([list(s) for s in sessions], dtype=tf.int32, ragged_rank=1)
  return {key: value.numpy() for key, value in
          expand_ragged(ragged, max_length, min_prefix_length).items()}
