"""Imports an event log into a prepared dataset folder (`python -m data.prepare --events=FILE`).

`import_events` turns the log into sessions with the model of `data.events_config` and writes the
folder `data.prepare` writes for any other source (shards, `vocab.txt` with the raw item ids,
`stats.json`, `manifest.json`), into a temporary folder renamed into place at the end: after an
error nothing is written, and the temporary files are removed.

Memory is bounded by `ImportResources.memory_bytes` (plus a few bytes per distinct item), not by
the log's size, and the log may be in any order:
1. read: the log is read once in chunks (`data.events_reader`); each event (its row, session or
   user id, item code, time) goes to one of P temporary Arrow files chosen by a hash of its id,
   so all events of a session (a user) land in one partition. P is chosen from the log's size
   (estimated from the first chunk) so that a partition fits the budget.
2. sessions: per partition, events are sorted by (id, time, row), cut into sessions, and repeats
   and lengths filtered; the item counts and the order of first appearance are summed up.
3. filters: `top_items` from those counts, then rounds over the partitions of the session-length
   and item-support filters; their state is one mask over the items.
4. order: per partition, the sessions left and their time go to B temporary time buckets (time
   ranges from a sample of the session times, B chosen from the events left).
5. split and write: buckets are read in time order, each sorted by (time, first row of the id,
   start), so sessions come oldest first; the test cut, the items seen in training, the
   validation split and the shards are streamed from them (test sessions, reordered after their
   unseen items are dropped, go through a second set of buckets).

The rules of the stages are module-level functions (`cut_sessions`, `filter_round` and
`Steps.add_round`, `TestSplit`, `split_side`, `keep_seen_items`, `dropped_examples`,
`validation_sessions`, `write_imported_files`), which `data.events_beam` runs as an Apache Beam
pipeline that writes the same folder.
"""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tqdm
from absl import logging

from data import events_config
from data.events_config import ImportResources
from data.atomic import atomic_directory
from data.errors import EventLogError
from data.events_reader import Catalogue, EventReader, partition_of
from data.prepare_config import PrepareConfig
from data.prepared_output import SplitCounts, num_validation, stats_from_counts, write_folder_files
from data.registry import DatasetSpec
from data.vocabulary import Vocabulary

# Peak bytes per event while a partition (stage 2) or a time bucket (stage 5) is processed:
# its columns, their sorted copies and the sort's index.
PARTITION_BYTES_PER_EVENT = 192
BUCKET_BYTES_PER_EVENT = 96
SAMPLE_PER_PARTITION = 4096  # session times per partition that place the bucket boundaries
_NO_ROW = np.iinfo(np.int64).max


class _Store:
  """Numpy columns appended part by part to files `<directory>/<part>.<column>`."""

  def __init__(self, directory: str, dtypes: Dict[str, type]):
    self.directory, self.dtypes = directory, dtypes
    os.makedirs(directory, exist_ok=True)

  def _path(self, part: int, column: str) -> str:
    return os.path.join(self.directory, f"{part}.{column}")

  def append(self, part: int, **columns: np.ndarray) -> None:
    for column, values in columns.items():
      with open(self._path(part, column), "ab") as out:
        out.write(np.ascontiguousarray(values, self.dtypes[column]).tobytes())

  def read(self, part: int, *columns: str) -> List[np.ndarray]:
    return [np.fromfile(self._path(part, column), self.dtypes[column])
            if os.path.exists(self._path(part, column)) else np.zeros(0, self.dtypes[column])
            for column in columns]


@dataclasses.dataclass
class RoundCounts:
  """One round of the session-length filter (`filter_round`), summed over sessions.

  Attributes:
    before: events and sessions entering the round (for a round after the first: the sessions
      its predecessor kept, with events left by the item mask).
    after: events and sessions long enough.
    changed: a session entering the round was too short.
    counted: `filter_round`'s, per event: whether it counts for the item support (its item is
      alive and its session long enough); None in a sum.
  """
  before: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2, np.int64))
  after: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2, np.int64))
  changed: bool = False
  counted: Optional[np.ndarray] = None

  def __add__(self, other: "RoundCounts") -> "RoundCounts":
    return RoundCounts(self.before + other.before, self.after + other.after,
                       self.changed or other.changed)


def filter_round(min_session_length: int, session: np.ndarray, num_sessions: int,
                 alive: np.ndarray, alive_before: Optional[np.ndarray]) -> RoundCounts:
  """The session-length filter of one round over the events `[n]` of `num_sessions` sessions
  (`session` their index), `alive` where the round's item mask keeps the event, `alive_before`
  where the previous round's did (None in the first round)."""
  lengths = np.bincount(session[alive], minlength=num_sessions)
  entering = (lengths > 0) if alive_before is None else (
      np.bincount(session[alive_before], minlength=num_sessions) >= min_session_length) & (
          lengths > 0)
  long_enough = lengths >= min_session_length
  return RoundCounts(np.array([lengths[entering].sum(), entering.sum()], np.int64),
                     np.array([lengths[long_enough].sum(), long_enough.sum()], np.int64),
                     bool(np.any(entering & ~long_enough)), alive & long_enough[session])


def final_filter_step(config: events_config.EventsConfig) -> str:
  """The step name of the sessions left by all filters."""
  return (f"min_item_support={config.min_item_support}, "
          f"min_session_length={config.min_session_length}")


@dataclasses.dataclass
class Steps:
  """Events and sessions left after each step, for the log, stats.json and the empty-log error."""
  path: str
  rows: List[Tuple[str, int, int]] = dataclasses.field(default_factory=list)

  def add(self, step: str, events: int, sessions: int) -> None:
    self.rows.append((step, int(events), int(sessions)))
    logging.info("%-34s %12s events %11s sessions", step, f"{events:,}", f"{sessions:,}")

  def check_not_empty(self) -> None:
    step, _, sessions = self.rows[-1]
    if not sessions:
      raise EventLogError(self.path, f"no session is left after the filter {step} (events and "
                          "sessions after each step: " + "; ".join(
                              f"{name} {events:,}/{count:,}" for name, events, count in self.rows)
                          + ")")

  def add_read(self, config: events_config.EventsConfig, sizes: np.ndarray,
               sessions: int) -> None:
    """The rows of step 2: events read, after `remove_repeats`, after `max_session_length`."""
    self.add("read", sizes[0], sessions)
    if config.remove_repeats:
      self.add("remove_repeats", sizes[1], sessions)
    if config.max_session_length:
      self.add(f"max_session_length={config.max_session_length}", sizes[2], sessions)

  def add_round(self, config: events_config.EventsConfig, round_number: int,
                counts: RoundCounts, rare: bool) -> bool:
    """Records a round of the filters (`rare`: it found items below the support); returns
    whether the rounds stop (one round, or `filter_until_stable` and nothing changed).

    Raises:
      EventLogError: the round left no session.
    """
    suffix = f" (round {round_number})" if config.filter_until_stable else ""
    if round_number == 1 and config.top_items:
      self.add(f"top_items={config.top_items}", *counts.before)
    elif round_number > 1:
      self.add(f"min_item_support={config.min_item_support} (round {round_number - 1})",
               *counts.before)
    self.add(f"min_session_length={config.min_session_length}{suffix}", *counts.after)
    self.check_not_empty()
    if not config.filter_until_stable:
      return True
    if not (counts.changed or rare):
      self.rows.pop()  # the last round removed nothing: its counts repeat the previous
      return True
    return False

  def add_test(self, config: events_config.EventsConfig, description: str,
               before: Tuple[int, int], test: SplitCounts) -> None:
    """The rows of the test split before and after its sessions keep items seen in training.

    Raises:
      EventLogError: no test session is left.
    """
    self.add("test split: " + description, *before)
    self.add("test: items seen in training, min_session_length", test.clicks, test.sessions)
    if not test.sessions:
      raise EventLogError(self.path, f"no test session is left: the test split "
                          f"({description}, {before[1]:,} sessions) has no "
                          f"session with {config.min_session_length} or more events of "
                          "items seen in training")

  def as_list(self) -> List[Dict]:
    return [{"step": step, "events": events, "sessions": sessions}
            for step, events, sessions in self.rows]


def _progress(total: int, unit: str, description: str) -> tqdm.tqdm:
  return tqdm.tqdm(total=total, unit=unit, unit_scale=True, desc=description, leave=False,
                   disable=None)


def _groups(sorted_ids: np.ndarray) -> np.ndarray:
  """`[n]` bool: True where a run of equal values of `sorted_ids` starts."""
  starts = np.ones(len(sorted_ids), bool)
  starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
  return starts


def _positions(sorted_ids: np.ndarray) -> np.ndarray:
  """`[n]` int64: each element's position within its run of equal values of `sorted_ids`."""
  starts = np.flatnonzero(_groups(sorted_ids))
  return np.arange(len(sorted_ids)) - np.repeat(starts, np.diff(np.append(starts,
                                                                          len(sorted_ids))))


def _lists(lengths: np.ndarray, items: np.ndarray, block: int = 1 << 16) -> Iterator[List[int]]:
  """The sessions of `lengths` `[sessions]` over the concatenated `items` `[events]`, as lists,
  converted a block of sessions at a time (a whole bucket as Python ints would not fit the
  budget)."""
  ends = np.cumsum(lengths)
  for first in range(0, len(lengths), block):
    last = min(first + block, len(lengths))
    start = int(ends[first - 1]) if first else 0
    values = items[start:int(ends[last - 1])].tolist()
    begin = 0
    for end in (ends[first:last] - start).tolist():
      yield values[begin:end]
      begin = end


@dataclasses.dataclass(frozen=True)
class SessionCut:
  """The sessions of some ids' events, after `remove_repeats` and `max_session_length`.

  Per session `[sessions]`, in order of (id, start): `key_row` (the first row of its id), `seq`
  (its rank among its id's sessions), `last_time` (with `session_time=last_row`: the time of its
  last row before any filter; else 0). Per event kept `[events]`, a session's events contiguous
  and in time order: `item`, `time`, `session` (index into the per-session arrays), and with
  `top_items` `event_key_row` and `position` (the event's rank among its id's kept events; else
  None). `sizes`: events read, after repeats, after truncation.
  """
  key_row: np.ndarray
  seq: np.ndarray
  last_time: np.ndarray
  item: np.ndarray
  time: np.ndarray
  session: np.ndarray
  event_key_row: Optional[np.ndarray]
  position: Optional[np.ndarray]
  sizes: np.ndarray


def cut_sessions(config: events_config.EventsConfig, key: np.ndarray, when: np.ndarray,
                 item: np.ndarray, row: np.ndarray) -> SessionCut:
  """Sessions of events `[n]` (int ids `key`, ms `when`, items `item`, 0-based file `row`) of any
  number of whole ids (all events of an id), cut and filtered by `config` (steps 2 and the first
  two filters of `data.events_config`). The chunked importer calls it per partition, the Beam
  pipeline (`data.events_beam`) per id."""
  order = np.lexsort((row, when, key))
  key, when, item, row = key[order], when[order], item[order], row[order]
  del order
  new_key = _groups(key)
  new_session = new_key.copy()
  if config.user_column:
    new_session[1:] |= (when[1:] - when[:-1]) > round(config.session_gap_seconds * 1000)
  key_index = np.cumsum(new_key) - 1
  key_row = np.minimum.reduceat(row, np.flatnonzero(new_key))[key_index]  # per event
  session = np.cumsum(new_session) - 1
  starts = np.flatnonzero(new_session)
  num_sessions = len(starts)
  first_of_key = np.flatnonzero(_groups(key_index[starts]))
  seq = np.arange(num_sessions) - np.repeat(first_of_key,
                                            np.diff(np.append(first_of_key, num_sessions)))
  if config.session_time == "last_row":
    by_row = np.lexsort((row, session))
    last_time = when[by_row[np.append(starts[1:], len(session)) - 1]]
  else:
    last_time = np.zeros(num_sessions, np.int64)
  sizes = [len(item)]
  keep = np.ones(len(item), bool)
  if config.remove_repeats:
    keep[1:] = new_session[1:] | (item[1:] != item[:-1])
  sizes.append(int(keep.sum()))
  if config.max_session_length:
    kept = np.flatnonzero(keep)
    keep[kept[_positions(session[kept]) >= config.max_session_length]] = False
  sizes.append(int(keep.sum()))
  first_seen = (key_row[keep], _positions(key_index[keep])) if config.top_items else (None, None)
  return SessionCut(key_row[starts], seq, last_time, item[keep], when[keep], session[keep],
                    *first_seen, np.array(sizes))


@dataclasses.dataclass(frozen=True)
class TestSplit:
  """The test split's rule (step 5 of `data.events_config`) for sessions of times up to
  `latest` (in `session_time_unit`).

  Attributes:
    split_time: with `test_days`, the first time of the test split; else None.
    rank: with `test_fraction`, the position of the oldest test session in time order; else None.
    description: the split in words, for the steps and the errors.
  """
  split_time: Optional[int]
  rank: Optional[int]
  description: str

  @classmethod
  def of(cls, config: events_config.EventsConfig, latest: int, num_sessions: int) -> "TestSplit":
    """Raises: EventLogError: the fraction of the sessions is no session."""
    if config.test_days:
      unit_ms = events_config.TIME_UNITS_MS[config.session_time_unit]
      return cls(latest - config.test_days * (events_config.MS_PER_DAY // unit_ms), None,
                 f"the last {config.test_days} day(s)")
    num_test = int(config.test_fraction * num_sessions)
    if not num_test:
      raise EventLogError(config.path, f"--test_fraction={config.test_fraction} of "
                          f"{num_sessions:,} sessions is no session")
    return cls(None, num_sessions - num_test, f"the newest {config.test_fraction} of the sessions")

  def check(self, path: str, train_sessions: int, test_sessions: int, dropped: int) -> None:
    """Raises: EventLogError: either side of the split is empty."""
    if dropped:
      logging.info("%s sessions dropped: their time is the split time", f"{dropped:,}")
    if not train_sessions:
      raise EventLogError(path, f"the training split is empty: the test split "
                          f"({self.description}) holds all "
                          f"{train_sessions + test_sessions + dropped:,} sessions")
    if not test_sessions:
      raise EventLogError(path, f"the test split ({self.description}) holds no session")


def split_side(config: events_config.EventsConfig, time_: np.ndarray, key_row: np.ndarray,
               seq: np.ndarray, split_time: Optional[int],
               cut: Optional[Tuple[int, int, int]]) -> np.ndarray:
  """int8 per session `[n]`: 0 training, 1 test, -1 dropped (exactly at the split time).

  Args:
    time_, key_row, seq: the sessions' order (time, first row of the id, rank in the id).
    split_time: with `test_days`, `TestSplit.split_time`.
    cut: with `test_fraction`, the order of the oldest test session.
  """
  if config.test_days:
    side = (time_ >= split_time).astype(np.int8)
    if config.drop_sessions_at_split:
      side[time_ == split_time] = -1
    return side
  cut_time, cut_row, cut_seq = cut
  return ((time_ > cut_time) | ((time_ == cut_time) & (
      (key_row > cut_row) | ((key_row == cut_row) & (seq >= cut_seq))))).astype(np.int8)


def bucket_bounds(sorted_sample: np.ndarray, num_buckets: int) -> np.ndarray:
  """The times that cut a sample of session times `[n]` (sorted) into `num_buckets` ranges of
  about as many sessions (fewer where times repeat); a session of time t goes to bucket
  `searchsorted(bounds, t, side="right")`."""
  if not len(sorted_sample):
    return np.zeros(0, np.int64)
  return np.unique(sorted_sample[(np.arange(1, num_buckets) * len(sorted_sample)) // num_buckets])


def keep_seen_items(config: events_config.EventsConfig, time_: np.ndarray, length: np.ndarray,
                    seen: np.ndarray,
                    event_time: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray]:
  """Test sessions (`time_`, `length` `[sessions]`; `seen`, `event_time` `[events]`, whether the
  item is in a training session) reduced to their events of items seen in training.

  Returns:
    keep `[sessions]` (long enough), their new lengths `[sessions]`, the events kept `[events]`
    and the kept sessions' times (with `session_time=end` their new latest event's).
  """
  unit_ms = events_config.TIME_UNITS_MS[config.session_time_unit]
  session = np.repeat(np.arange(len(length)), length)
  new_length = np.bincount(session[seen], minlength=len(length))
  keep = new_length >= config.min_session_length
  events = seen & keep[session]
  new_time = time_[keep]
  if config.session_time == "end" and events.any():
    kept_session = session[events]
    ends = np.append(np.flatnonzero(_groups(kept_session))[1:], len(kept_session)) - 1
    new_time = np.floor_divide(event_time[events][ends], unit_ms)
  return keep, new_length, events, new_time


def dropped_examples(config: events_config.EventsConfig, path: str, train_examples: int) -> int:
  """How many of the oldest training examples `train_examples_divisor` drops (-1: none).

  Raises:
    EventLogError: too few examples to keep any.
  """
  divisor = config.train_examples_divisor
  if divisor == 1:
    return -1
  if not train_examples // divisor:
    raise EventLogError(path, f"{train_examples:,} training examples are too few to keep "
                        f"1/{divisor}")
  return train_examples - train_examples // divisor


def validation_sessions(path: str, num_train: int, fraction: float) -> int:
  """`num_validation` of the kept training sessions. Raises: EventLogError: too few."""
  try:
    return num_validation(num_train, fraction)
  except ValueError as error:
    raise EventLogError(path, str(error)) from None


class _Partitions:
  """Events spread over Arrow stream files `events-<k>.arrow` by a hash of their session (user)
  id, so that all events of an id are in one file."""

  def __init__(self, directory: str, count: int):
    self.directory, self.count, self._hashed = directory, count, count
    self.sizes: Dict[int, int] = {}
    self._writers: Dict[int, pa.ipc.RecordBatchStreamWriter] = {}

  def _path(self, part: int) -> str:
    return os.path.join(self.directory, f"events-{part}.arrow")

  def write(self, table: pa.Table, keys, first: int = 0, width: int = 0, salt: int = 0) -> None:
    """Appends the events of `table` (columns key, time, item, row; `keys` its ids) to the
    partitions `first .. first + width - 1` (default: all of the first hashing)."""
    width = width or self.count
    part = partition_of(keys, width, salt) + first
    order = np.argsort(part, kind="stable")
    table = table.take(order)
    bounds = np.searchsorted(part[order], np.arange(first, first + width + 1))
    for offset in np.flatnonzero(np.diff(bounds)).tolist():
      index, start, stop = first + offset, int(bounds[offset]), int(bounds[offset + 1])
      if index not in self._writers:
        self._writers[index] = pa.ipc.new_stream(pa.OSFile(self._path(index), "wb"),
                                                 table.schema)
      self._writers[index].write_table(table.slice(start, stop - start))
      self.sizes[index] = self.sizes.get(index, 0) + stop - start

  def close(self) -> None:
    for writer in self._writers.values():
      writer.close()
    self._writers.clear()

  def tables(self, largest: int) -> Iterator[Tuple[int, pa.Table]]:
    """Yields `(partition, its events)`, each partition read whole and deleted. A partition of
    the first hashing with more than `largest` events (the log's size was under-estimated) is
    first spread over new partitions by another hash, batch by batch (once: the events of one
    id stay together, so one huge id cannot be spread)."""
    part = 0
    while part < self.count:
      path, size = self._path(part), self.sizes.get(part, 0)
      if size > largest and part < self._hashed:
        first, width = self.count, math.ceil(size / largest)
        self.count += width
        with pa.OSFile(path, "rb") as source:
          for batch in pa.ipc.open_stream(source):
            table = pa.Table.from_batches([batch])
            self.write(table, _keys(table.column("key")), first, width, salt=1)
        self.close()
        os.remove(path)
      elif size:
        with pa.OSFile(path, "rb") as source:
          table = pa.ipc.open_stream(source).read_all()
        os.remove(path)
        yield part, table
      part += 1


def _keys(column: pa.ChunkedArray):
  """The ids of an Arrow column as `partition_of` takes them (int64 array, or strings)."""
  column = column.combine_chunks()
  return column if pa.types.is_string(column.type) else column.to_numpy()


class _Importer:
  """One import: the stages of the module docstring, over a temporary folder."""

  def __init__(self, config: events_config.EventsConfig, min_prefix_length: int,
               resources: ImportResources, workspace: str):
    self.config, self.resources, self.workspace = config, resources, workspace
    self.min_prefix_length = min_prefix_length
    self.path = config.path
    self.steps = Steps(self.path)
    self.unit_ms = events_config.TIME_UNITS_MS[config.session_time_unit]
    self.catalogue: Optional[Catalogue] = None
    self.num_partitions = 0
    self.rows = self.rows_skipped = 0

  # 1. read -------------------------------------------------------------------------------------

  def read(self) -> None:
    """Stage 1: the log, chunk by chunk, into hash partitions of Arrow files."""
    reader = EventReader(self.config, self.resources.chunk_bytes)
    partitions = None
    progress = _progress(reader.size, "B", "reading")
    try:
      for chunk in reader:
        if partitions is None:
          partitions = _Partitions(self.workspace, max(1, math.ceil(
              reader.estimated_rows() * PARTITION_BYTES_PER_EVENT / self.resources.memory_bytes)))
        partitions.write(pa.table({"key": chunk.keys, "time": chunk.times, "item": chunk.items,
                                   "row": chunk.rows}), chunk.keys)
        progress.update(reader.position() - progress.n)
    finally:
      progress.close()
      reader.close()
      if partitions is not None:
        partitions.close()
    self.catalogue, self.rows, self.rows_skipped = (reader.catalogue, reader.rows_read,
                                                    reader.rows_skipped)
    if partitions is None:
      raise EventLogError(self.path, "the log has no events" +
                          (f" ({self.rows_skipped:,} rows skipped by --drop_missing)"
                           if self.rows_skipped else ""))
    self.partitions = partitions
    logging.info("Read %s rows (%s skipped) into %d partitions; %s items", f"{self.rows:,}",
                 f"{self.rows_skipped:,}", partitions.count, f"{len(self.catalogue):,}")

  # 2. sessions ---------------------------------------------------------------------------------

  def sessions(self) -> None:
    """Stage 2: per partition, sessions cut and their repeats and lengths filtered."""
    num_items = len(self.catalogue)
    self.counts = np.zeros(num_items, np.int64)
    self.first_seen = np.full((num_items, 2), _NO_ROW, np.int64)  # (id's first row, position)
    self.store = _Store(os.path.join(self.workspace, "sessions"),
                        {"item": np.int32, "time": np.int64, "session": np.int64,
                         "key_row": np.int64, "seq": np.int64, "last_time": np.int64})
    totals = np.zeros(3, np.int64)  # events read, after repeats, after truncation
    sessions = 0
    largest = max(1, self.resources.memory_bytes // PARTITION_BYTES_PER_EVENT)
    for part, table in tqdm.tqdm(self.partitions.tables(largest), total=self.partitions.count,
                                 desc="sessions", leave=False, disable=None):
      sizes, count = self._sessionize(part, table)
      totals += sizes
      sessions += count
      del table
      pa.default_memory_pool().release_unused()
    self.num_partitions = self.partitions.count
    self.steps.add_read(self.config, totals, sessions)

  def _sessionize(self, part: int, table: pa.Table) -> Tuple[np.ndarray, int]:
    """Sessions of one partition's events; returns (events read, after repeats, after
    truncation) and the number of sessions."""
    keys = table.column("key")
    if pa.types.is_string(keys.type):
      keys = pc.dictionary_encode(keys.combine_chunks()).indices
    cut = cut_sessions(self.config, keys.to_numpy(),
                       *(table.column(name).to_numpy() for name in ("time", "item", "row")))
    self.store.append(part, key_row=cut.key_row, seq=cut.seq, last_time=cut.last_time)
    self.store.append(part, item=cut.item, time=cut.time, session=cut.session)
    self.counts += np.bincount(cut.item, minlength=len(self.counts))
    if self.config.top_items:
      self._first_seen(cut.item, cut.event_key_row, cut.position)
    return cut.sizes, len(cut.seq)

  def _first_seen(self, item: np.ndarray, key_row: np.ndarray, position: np.ndarray) -> None:
    """Keeps, per item, the earliest (id's first row, position in the id's events) seen."""
    order = np.lexsort((position, key_row, item))
    first = order[_groups(item[order])]
    items, candidate = item[first], np.stack([key_row[first], position[first]], axis=1)
    current = self.first_seen[items]
    better = (candidate[:, 0] < current[:, 0]) | ((candidate[:, 0] == current[:, 0]) &
                                                 (candidate[:, 1] < current[:, 1]))
    self.first_seen[items[better]] = candidate[better]

  # 3. filters ----------------------------------------------------------------------------------

  def _partition_sessions(self) -> Iterator[Tuple[int, np.ndarray, np.ndarray, int]]:
    for part in range(self.num_partitions):
      item, session, seq = self.store.read(part, "item", "session", "seq")
      if len(seq):
        yield part, item, session, len(seq)

  def filters(self) -> None:
    """Stage 3: top items, then the session-length and item-support filters (their rounds)."""
    config = self.config
    mask = self.counts > 0
    if config.top_items:
      ranked = np.lexsort((self.first_seen[:, 1], self.first_seen[:, 0], -self.counts))
      mask = np.zeros(len(self.counts), bool)
      mask[ranked[:config.top_items]] = True
      mask &= self.counts > 0
    del self.first_seen
    previous = None  # the mask of the previous round: sessions it left shorter are gone
    for round_number in range(1, 1 << 30):
      counts = np.zeros(len(mask), np.int64)
      totals = RoundCounts()
      for _, item, session, num_sessions in self._partition_sessions():
        result = filter_round(config.min_session_length, session, num_sessions, mask[item],
                              None if previous is None else previous[item])
        totals += result
        counts += np.bincount(item[result.counted], minlength=len(mask))
      rare = bool(((counts > 0) & (counts < config.min_item_support)).any())
      previous, mask = mask, mask & (counts >= config.min_item_support)
      if self.steps.add_round(config, round_number, totals, rare):
        break
    self.mask = mask

  # 4. order ------------------------------------------------------------------------------------

  def _alive(self, part: int) -> Optional[Dict[str, np.ndarray]]:
    """A partition's sessions left by the filters: per session `time` (floored to the unit),
    `key_row`, `seq`, `length`; per event `item`, `event_time` (events of a session contiguous,
    sessions in partition order)."""
    item, when, session, key_row, seq, last_time = self.store.read(
        part, "item", "time", "session", "key_row", "seq", "last_time")
    if not len(seq):
      return None
    alive = self.mask[item]
    lengths = np.bincount(session[alive], minlength=len(seq))
    long_enough = lengths >= self.config.min_session_length
    kept = alive & long_enough[session]
    item, when, session = item[kept], when[kept], session[kept]
    if not len(item):
      return None
    if self.config.session_time == "end":
      ends = np.append(np.flatnonzero(_groups(session))[1:], len(session)) - 1
      session_time = when[ends]  # events of a session are in time order
    else:
      session_time = last_time[long_enough]
    return {"time": np.floor_divide(session_time, self.unit_ms), "key_row": key_row[long_enough],
            "seq": seq[long_enough], "length": lengths[long_enough], "item": item,
            "event_time": when}

  def order(self) -> None:
    """Stage 4: the sessions left, into time buckets."""
    rng = np.random.default_rng(0)
    samples, self.latest, events, sessions = [], None, 0, 0
    for part in range(self.num_partitions):
      alive = self._alive(part)
      if alive is None:
        continue
      times = alive["time"]
      samples.append(rng.choice(times, min(len(times), SAMPLE_PER_PARTITION), replace=False))
      self.latest = times.max() if self.latest is None else max(self.latest, times.max())
      events += len(alive["item"])
      sessions += len(times)
    self.steps.add(final_filter_step(self.config), events, sessions)
    self.steps.check_not_empty()
    num_buckets = max(1, math.ceil(events * BUCKET_BYTES_PER_EVENT /
                                   self.resources.memory_bytes))
    self.boundaries = bucket_bounds(np.sort(np.concatenate(samples)), num_buckets)
    self.buckets = _Store(os.path.join(self.workspace, "buckets"), _BUCKET_DTYPES)
    self.bucket_sessions = np.zeros(len(self.boundaries) + 1, np.int64)
    for part in tqdm.tqdm(range(self.num_partitions), desc="ordering", leave=False, disable=None):
      alive = self._alive(part)
      if alive is not None:
        self._to_buckets(self.buckets, alive, self.bucket_sessions)
    shutil.rmtree(self.store.directory)
    self.num_sessions = sessions

  def _to_buckets(self, store: _Store, sessions: Dict[str, np.ndarray],
                  bucket_sessions: np.ndarray) -> None:
    bucket = np.searchsorted(self.boundaries, sessions["time"], side="right")
    event_bucket = np.repeat(bucket, sessions["length"])
    bucket_sessions += np.bincount(bucket, minlength=len(bucket_sessions))
    for index in np.unique(bucket).tolist():
      chosen, events = bucket == index, event_bucket == index
      store.append(index, **{name: sessions[name][chosen]
                             for name in ("time", "key_row", "seq", "length")},
                   item=sessions["item"][events], event_time=sessions["event_time"][events])

  # 5. split and write ----------------------------------------------------------------------------

  def _sorted(self, store: _Store, bucket: int) -> Dict[str, np.ndarray]:
    """One bucket's sessions sorted by (time, id's first row, start) and their items."""
    time_, key_row, seq, length, item = store.read(bucket, "time", "key_row", "seq", "length",
                                                   "item")
    order = np.lexsort((seq, key_row, time_))
    length = length.astype(np.int64)
    offsets = np.cumsum(length) - length
    sorted_length = length[order]
    events = np.repeat(offsets[order] - (np.cumsum(sorted_length) - sorted_length),
                       sorted_length) + np.arange(sorted_length.sum())
    return {"time": time_[order], "key_row": key_row[order], "seq": seq[order],
            "length": sorted_length, "item": item[events]}

  def split(self) -> None:
    """The test split's rule (`_side`), the training counts and the items seen in training."""
    config = self.config
    rule = TestSplit.of(config, self.latest, self.num_sessions)
    self.split_time, description = rule.split_time, rule.description
    if not config.test_days:
      rank = rule.rank
      before = np.cumsum(self.bucket_sessions) - self.bucket_sessions
      self.cut_bucket = int(np.searchsorted(before, rank, side="right") - 1)
      cut = self._sorted(self.buckets, self.cut_bucket)
      index = rank - before[self.cut_bucket]
      self.cut = (cut["time"][index], cut["key_row"][index], cut["seq"][index])
      description = f"the newest {config.test_fraction} of the sessions"
    self.in_train = np.zeros(len(self.mask), bool)
    train = SplitCounts(self.min_prefix_length)
    num_test = dropped = 0
    for bucket in range(len(self.bucket_sessions)):
      time_, key_row, seq, length, item = self.buckets.read(
          bucket, "time", "key_row", "seq", "length", "item")
      side = self._side(bucket, time_, key_row, seq)
      self.in_train[item[np.repeat(side == 0, length)]] = True
      train.add(length[side == 0])
      num_test += int((side == 1).sum())
      dropped += int((side < 0).sum())
    rule.check(self.path, train.sessions, num_test, dropped)
    self.train = train
    self.test_description = description

  def _side(self, bucket: int, time_: np.ndarray, key_row: np.ndarray,
            seq: np.ndarray) -> np.ndarray:
    """int8 per session: 0 training, 1 test, -1 dropped (exactly at the split time)."""
    if not self.config.test_days and bucket != self.cut_bucket:
      return np.full(len(time_), int(bucket > self.cut_bucket), np.int8)
    return split_side(self.config, time_, key_row, seq, self.split_time,
                      None if self.config.test_days else self.cut)

  def test_sessions(self) -> None:
    """Test events of items seen in training only; test sessions long enough, re-bucketed by
    their new time."""
    self.test_buckets = _Store(os.path.join(self.workspace, "test"), _BUCKET_DTYPES)
    self.test_bucket_sessions = np.zeros(len(self.bucket_sessions), np.int64)
    self.test = SplitCounts(self.min_prefix_length)
    self.in_test = np.zeros(len(self.mask), bool)
    events_before = sessions_before = 0
    for bucket in range(len(self.bucket_sessions)):
      time_, key_row, seq, length, item, event_time = self.buckets.read(
          bucket, "time", "key_row", "seq", "length", "item", "event_time")
      is_test = self._side(bucket, time_, key_row, seq) == 1
      if not is_test.any():
        continue
      events = np.repeat(is_test, length)
      item, event_time, length = item[events], event_time[events], length[is_test]
      events_before += len(item)
      sessions_before += len(length)
      keep, new_length, events, new_time = keep_seen_items(
          self.config, time_[is_test], length, self.in_train[item], event_time)
      self.test.add(new_length[keep])
      self.in_test[item[events]] = True
      self._to_buckets(self.test_buckets, {
          "time": new_time, "key_row": key_row[is_test][keep], "seq": seq[is_test][keep],
          "length": new_length[keep], "item": item[events],
          "event_time": event_time[events]}, self.test_bucket_sessions)
    self.steps.add_test(self.config, self.test_description, (events_before, sessions_before),
                        self.test)

  def _train_sessions(self, lookup: Optional[np.ndarray] = None) -> Iterator[List[int]]:
    """The training sessions, oldest first, as lists of item codes (or of `lookup[code]`),
    after the examples divisor."""
    drop = dropped_examples(self.config, self.path, self.train.examples)
    seen = 0
    for bucket in range(len(self.bucket_sessions)):
      sessions = self._sorted(self.buckets, bucket)
      is_train = self._side(bucket, sessions["time"], sessions["key_row"], sessions["seq"]) == 0
      items = sessions["item"][np.repeat(is_train, sessions["length"])]
      for session in _lists(sessions["length"][is_train],
                            items if lookup is None else lookup[items]):
        examples = max(len(session) - self.min_prefix_length, 0)
        seen += examples
        if seen <= drop:  # older than the kept examples
          continue
        if seen - examples <= drop:  # the cut: its newest prefixes are not kept
          session = session[:seen - drop + self.min_prefix_length]
        yield session

  def vocabulary(self) -> Vocabulary:
    """Items of the kept training sessions, then items only in test (SR-GNN's Yoochoose)."""
    kept = np.zeros(len(self.mask), bool)
    self.kept_train = SplitCounts(self.min_prefix_length)
    if self.config.train_examples_divisor > 1:
      for session in self._train_sessions():
        kept[session] = True
        self.kept_train.add_one(len(session))
    else:
      kept, self.kept_train = self.in_train, self.train
    test_only = self.in_test & ~kept
    self.kept = kept
    self.items_in_train = int(kept.sum())
    return Vocabulary.from_ids(self.catalogue.raw_ids(np.flatnonzero(kept)),
                               self.catalogue.raw_ids(np.flatnonzero(test_only)))

  def write(self, directory: str, vocabulary: Vocabulary, num_shards: int,
            validation_fraction: float) -> Tuple[Dict[str, List[Dict]], Dict[str, SplitCounts]]:
    """Writes the shards into `directory`; returns their manifest entries and counts."""
    from data.tfrecord import ShardWriter  # pylint: disable=g-import-not-at-top  (imports TF)
    index_of = vocabulary.index_of()
    codes = np.flatnonzero(self.kept | self.in_test)
    lookup = np.zeros(len(self.mask), np.int64)
    lookup[codes] = [index_of[name] for name in self.catalogue.raw_ids(codes)]
    num_train_sessions = self.kept_train.sessions
    num_valid = validation_sessions(self.path, num_train_sessions, validation_fraction)
    writers = {
        "train": ShardWriter(directory, "train", num_train_sessions - num_valid, num_shards,
                             self.min_prefix_length),
        "valid": ShardWriter(directory, "valid", num_valid, min(2, num_shards),
                             self.min_prefix_length),
        "test": ShardWriter(directory, "test", self.test.sessions, min(2, num_shards),
                            self.min_prefix_length),
    }
    counts = {split: SplitCounts(self.min_prefix_length) for split in writers}
    progress = _progress(num_train_sessions + self.test.sessions, "sessions", "writing")
    try:
      for position, session in enumerate(self._train_sessions(lookup)):
        split = "train" if position < num_train_sessions - num_valid else "valid"
        writers[split].write(session)
        counts[split].add_one(len(session))
        progress.update(1)
      for bucket in range(len(self.test_bucket_sessions)):
        sessions = self._sorted(self.test_buckets, bucket)
        for session in _lists(sessions["length"], lookup[sessions["item"]]):
          writers["test"].write(session)
          counts["test"].add_one(len(session))
        progress.update(len(sessions["length"]))
      return {split: writer.close() for split, writer in writers.items()}, counts
    except BaseException:
      for writer in writers.values():
        writer.abort()
      raise
    finally:
      progress.close()


_BUCKET_DTYPES = {"time": np.int64, "key_row": np.int64, "seq": np.int64, "length": np.int32,
                  "item": np.int32, "event_time": np.int64}


@contextlib.contextmanager
def temporary_workspace(parent: str, name: str) -> Iterator[str]:
  """A temporary folder in `parent` (made if missing, and removed again if it was), removed at
  the end whatever happens."""
  made = []
  folder = os.path.abspath(parent)
  while not os.path.exists(folder):
    made.append(folder)
    folder = os.path.dirname(folder)
  os.makedirs(parent, exist_ok=True)
  workspace = tempfile.mkdtemp(dir=parent, prefix=f".{name}.import-")
  try:
    yield workspace
  finally:
    shutil.rmtree(workspace, ignore_errors=True)
    for folder in made:
      with contextlib.suppress(OSError):
        os.rmdir(folder)  # only if still empty


def import_events(config: PrepareConfig, spec: DatasetSpec, directory: str,
                  resources: ImportResources = ImportResources()) -> None:
  """Imports `config.events` into the prepared dataset folder `directory` (see module doc).

  Raises:
    EventLogError: bad input (naming the file, column and row), or a log that the filters or
      the split leave empty (naming the step); nothing is written.
  """
  events = config.events
  seconds = {}
  with temporary_workspace(resources.temp_dir or os.path.dirname(os.path.abspath(directory)),
                  spec.name) as workspace:
    importer = _Importer(events, spec.min_prefix_length, resources, workspace)
    for stage in (importer.read, importer.sessions, importer.filters, importer.order,
                  importer.split, importer.test_sessions):
      started = time.perf_counter()
      stage()
      pa.default_memory_pool().release_unused()  # Arrow keeps freed memory for reuse otherwise
      seconds[stage.__name__] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    vocabulary = importer.vocabulary()
    with atomic_directory(directory) as temporary:
      shards, counts = importer.write(temporary, vocabulary, config.num_shards,
                                      config.validation_fraction)
      seconds["write"] = round(time.perf_counter() - started, 2)
      write_imported_files(temporary, config, spec, vocabulary, counts, importer.items_in_train,
                           importer.rows, importer.rows_skipped, importer.steps, shards)
  logging.info("Imported %s (%d partitions, %d buckets); seconds per stage: %s", events.path,
               importer.num_partitions, len(importer.bucket_sessions), json.dumps(seconds))


def write_imported_files(directory: str, config: PrepareConfig, spec: DatasetSpec,
                         vocabulary: Vocabulary, counts: Dict[str, SplitCounts],
                         items_in_train: int, rows: int, rows_skipped: int, steps: Steps,
                         shards: Dict[str, List[Dict]]) -> None:
  """Writes an imported folder's `vocab.txt`, `stats.json` and `manifest.json` beside its
  shards. What they hold depends on the log and `config` only, not on how the import ran (its
  memory budget, partitions, runner): the chunked importer and the Beam pipeline write the same
  bytes."""
  stats = stats_from_counts(counts["train"], counts["valid"], counts["test"], vocabulary.size,
                            items_in_train)
  preset = events_config.PRESETS.get(config.events.preset)
  stats.update({
      "dataset": spec.name,
      "protocol": (preset.protocol + ", " if preset else "") + "event-log import",
      "source": f"event log {config.events.path}",
      "validation_fraction": config.validation_fraction,
      "import": {"rows": rows, "rows_skipped": rows_skipped, "steps": steps.as_list()},
  })
  write_folder_files(directory, config, spec, vocabulary, stats, shards)
