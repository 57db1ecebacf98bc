"""Server-side batching: concurrent requests to one signature answered by one call.

As TF Serving's `--enable_batching`: requests that arrive while the signature is busy wait in a
queue, and the next call takes as many of them as fit in `max_batch_size` rows, concatenated along
dimension 0; each request gets its own rows of every output back. With `batch_timeout_micros` = 0
(the default) nothing waits for a batch to fill: a request alone is run at once, so batching adds
no latency at low load and replaces queueing by shared work at high load (one pass over the item
table for a whole batch of sessions instead of one per session).

Requests are merged only when their inputs agree beyond dimension 0, except the inputs named in
`pad_inputs`, whose dimension 1 is right-padded with zeros to the longest (TF Serving's
`pad_variable_length_inputs`). That is exact for our exports' `sessions`, where 0 is padding and
may stand on either side; a model where padding changes the answer must not list its inputs.

There are no batching threads: the threads of the waiting requests run the batches, at most
`num_batch_threads` at a time, so a batcher holds no resources beyond its queue and is released
with its version.
"""

import collections
import dataclasses
import threading
import time
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

from absl import logging
import numpy as np


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
  """TF Serving's batching parameters (those of `--batching_parameters_file`) that apply here.

  max_batch_size: most rows (dimension 0, summed over requests) of one merged call; a request
    of this many rows or more runs at once, alone and outside the queue.
  batch_timeout_micros: how long the first request of a batch waits for others before the call
    (0: never waits).
  num_batch_threads: merged calls running at once.
  pad_inputs: input aliases right-padded with zeros in dimension 1 to merge different lengths.
  """
  max_batch_size: int = 64
  batch_timeout_micros: int = 0
  num_batch_threads: int = 1
  pad_inputs: Tuple[str, ...] = ("sessions",)

  def __post_init__(self):
    if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.batch_timeout_micros < 0:
      raise ValueError(f"BatchingOptions need max_batch_size >= 1, num_batch_threads >= 1 and "
                       f"batch_timeout_micros >= 0; got {self}")


class _Task:
  """One request in the queue: its input arrays, the outputs it wants and, once run, its reply."""

  def __init__(self, arrays: Mapping[str, np.ndarray], keys: Sequence[str], rows: int, group):
    self.arrays = arrays
    self.keys = keys
    self.rows = rows  # dimension 0, the same for every input
    self.group = group  # requests of one group can be merged
    self.taken = False
    self.done = False
    self.outputs = None
    self.error = None


class Batcher:
  """Merges concurrent `run` calls of one signature into batched calls of `run_arrays`."""

  def __init__(self, run_arrays: Callable[[Dict[str, np.ndarray], List[str]],
                                          Dict[str, np.ndarray]],
               options: BatchingOptions, name: str = "signature"):
    """`run_arrays(arrays, keys)` runs the signature on numpy inputs and returns the outputs named
    by `keys`, each with dimension 0 the batch. What it raises is raised in the request's thread;
    a merged call that fails is retried request by request, so only a bad request fails."""
    self._run_arrays = run_arrays
    self._options = options
    self._name = name
    self._merged_before = False
    self._condition = threading.Condition()
    self._pending = collections.deque()
    self._running = 0

  def _group(self, arrays: Mapping[str, np.ndarray]):
    """What must agree for requests to be merged: aliases, dtypes, and the unpadded dimensions."""
    return tuple(sorted(
        (alias, array.dtype.str, array.ndim,
         array.shape[2:] if alias in self._options.pad_inputs else array.shape[1:])
        for alias, array in arrays.items()))

  def run(self, arrays: Mapping[str, np.ndarray], keys: Sequence[str]) -> Dict[str, np.ndarray]:
    """Answers one request (inputs with dimension 0 the batch), possibly merged with others."""
    sizes = {array.shape[0] if array.ndim else None for array in arrays.values()}
    rows = sizes.pop() if len(sizes) == 1 else None
    if rows is None or rows >= self._options.max_batch_size:
      # No common batch dimension, or a full batch already: nothing to merge, so no queue.
      return self._run_arrays(dict(arrays), list(keys))
    task = _Task(arrays, keys, rows, self._group(arrays))
    with self._condition:
      self._pending.append(task)
      self._condition.notify_all()  # a leader waiting for its batch to fill
      while not task.done:
        if not task.taken and self._running < self._options.num_batch_threads:
          self._lead()
        else:
          self._condition.wait()
    if task.error is not None:
      raise task.error
    return task.outputs

  def _lead(self) -> None:
    """Takes a batch from the head of the queue and runs it (called holding the lock)."""
    self._running += 1
    try:
      if self._options.batch_timeout_micros:
        deadline = time.monotonic() + self._options.batch_timeout_micros * 1e-6
        while (self._pending and
               self._rows_like(self._pending[0]) < self._options.max_batch_size and
               time.monotonic() < deadline):
          self._condition.wait(deadline - time.monotonic())
      if not self._pending:  # another batch thread took them while this one waited
        return
      batch = self._take()
      self._condition.release()
      try:
        self._execute(batch)
      finally:
        self._condition.acquire()
      for task in batch:
        task.done = True
    finally:
      self._running -= 1
      self._condition.notify_all()

  def _rows_like(self, head: _Task) -> int:
    return sum(task.rows for task in self._pending if task.group == head.group)

  def _take(self) -> List[_Task]:
    """The oldest request and the later ones of its group that fit in max_batch_size rows."""
    head = self._pending.popleft()
    batch, rows, kept = [head], head.rows, collections.deque()
    while self._pending:
      task = self._pending.popleft()
      if task.group == head.group and rows + task.rows <= self._options.max_batch_size:
        batch.append(task)
        rows += task.rows
      else:
        kept.append(task)
    self._pending = kept
    for task in batch:
      task.taken = True
    return batch

  def _execute(self, batch: List[_Task]) -> None:
    """Runs `batch` as one call and hands each request its rows (or, on failure, its error)."""
    if len(batch) == 1:
      self._run_one(batch[0])
      return
    keys = sorted({key for task in batch for key in task.keys})
    merged = self._merge(batch)
    if not self._merged_before:
      self._merged_before = True
      logging.info("Batching %s: first merged call, %d requests in %d rows", self._name,
                   len(batch), sum(task.rows for task in batch))
    try:
      outputs = self._run_arrays(merged, keys)
    except Exception:  # pylint: disable=broad-except
      for task in batch:  # so that only the failing request gets the error
        self._run_one(task)
      return
    start = 0
    for task in batch:
      task.outputs = {key: outputs[key][start:start + task.rows] for key in task.keys}
      start += task.rows

  def _run_one(self, task: _Task) -> None:
    try:
      task.outputs = self._run_arrays(dict(task.arrays), list(task.keys))
    except Exception as error:  # pylint: disable=broad-except  (re-raised in the request's thread)
      task.error = error

  def _merge(self, batch: List[_Task]) -> Dict[str, np.ndarray]:
    """The requests' inputs concatenated along dimension 0, padded inputs to the longest."""
    merged = {}
    for alias in batch[0].arrays:
      arrays = [task.arrays[alias] for task in batch]
      if alias in self._options.pad_inputs and arrays[0].ndim >= 2:
        width = max(array.shape[1] for array in arrays)
        arrays = [np.pad(array, [(0, 0), (0, width - array.shape[1])] +
                         [(0, 0)] * (array.ndim - 2)) for array in arrays]
      merged[alias] = np.concatenate(arrays, axis=0)
    return merged
