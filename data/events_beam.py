"""Imports an event log with an Apache Beam pipeline (`python -m data.prepare_beam`).

`import_events` writes the same prepared folder as the chunked importer (`data.events`), byte for
byte: the shards, `vocab.txt`, `stats.json` and `manifest.json`. The options are the same
`EventsConfig`, and the rules are `data.events`' functions (cutting sessions, a round of the
filters, the test split, the test sessions' items, the examples divisor, the validation split, the
steps and their errors): this module says where each runs. The runner is a pipeline option
(`--runner=DirectRunner`, the default; `DataflowRunner`, `FlinkRunner`, `SparkRunner`), so the same
pipeline runs on a cluster.

The stages (elements: events, sessions, items; side inputs: a few numbers, or one value per item):
1. read: the log is split into parts of about `part_bytes` (`data.events_reader.plan_parts`:
   Parquet by row groups, plain CSV/TSV at line starts; a gzip stream cannot be split and is
   one part), read at the same time by `data.events_reader.EventReader` (the same checks). Each
   event goes out keyed by its session (user) id, with its part and its row in the part; the
   parts' row counts make the rows' numbers in the file (a side input of stage 2). Any error
   in a part, or parts whose ids are of different kinds, and the launching process reads the
   file again in order up to its first error: the chunked importer's error, exactly.
2. sessions: `GroupByKey` on the id, then `events.cut_sessions` per batch of ids (cut, repeats,
   truncation). With `top_items`, per-item counts and first appearances are combined per item
   (`CombinePerKey`) and ranked by `Top.Smallest`.
3. filters: the rounds of `events.filter_round`. Each round is a `ParDo` over the sessions with
   the round's item mask as a side input; its item counts are combined per item and make the
   next mask. How many rounds `filter_until_stable` needs is not known when a pipeline is built,
   so a pipeline holds `rounds_per_pipeline` rounds (1 without `filter_until_stable`): once a
   round removes nothing, the later ones pass the sessions through unchanged and count nothing,
   and stages 4-5 run on the sessions left. If the last round still removed something, stages
   4-5 get no session; the sessions and the mask are saved instead (`<temp>/sessions-R*`,
   text), and the launching process runs a pipeline of the next rounds from them, and so on
   until a round removes nothing: any number of rounds, at the cost of one more pipeline per
   `rounds_per_pipeline` rounds. The steps are replayed from the rounds' counts
   (`events.Steps.add_round`).
4. order and split: sessions go to time buckets (bounds from a sample of session times, as many
   buckets as the memory budget asks) and are sorted within a bucket (`GroupByKey`). A rank in the
   time order (the oldest test session of `test_fraction`, the cut of
   `train_examples_divisor`) is found from per-bucket counts, then by sorting the one bucket that
   holds it; after that every session's side is decided alone (`events.split_side`). The items
   seen in training, the test sessions' items (`events.keep_seen_items`) and the vocabulary are
   side inputs.
5. write: per bucket, the sessions are encoded and written as pieces of the shards they fall in
   (`data.tfrecord.shard_sizes`); the process that launched the pipeline then concatenates each
   shard's pieces in bucket order into the prepared folder (TFRecord files are concatenations of
   records) with `data.atomic.atomic_directory`, and writes the other files with
   `events.write_imported_files`.

Bad input is found where the chunked importer finds it and raises the same `EventLogError`
(exit code 2), after the pipeline has run: the read stage and the counts of every stage go to a
report that the launching process reads in the chunked importer's order. Nothing is written to
the output folder then, and the temporary folder (pieces and report) is removed.

Where things live: the temporary folder is `ImportResources.temp_dir` (default: beside the output
folder), read and written with `tf.io.gfile`, so it may be a `gs://` folder that the workers of a
cluster runner reach; the log may be a path the workers can read or a `gs://`, `s3://` or
`hdfs://` URI (`data.events_reader.open_input`); the prepared folder is written on the launching
machine, where the trainer reads it. What one worker holds: one id's events, one bucket's
sessions (the memory budget sets their size), and per-item side inputs (the item masks, the items
seen in training, the vocabulary): a few dozen bytes per distinct item, as the chunked importer.
"""

import base64
import collections
import dataclasses
import math
import os
import pickle
import time
import uuid
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from absl import logging
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from data import events
from data.atomic import atomic_directory
from data.errors import EventLogError
from data.events_config import TIME_UNITS_MS, EventsConfig, ImportResources
from data.events_reader import EventReader, FilePart, plan_parts
from data.prepare_config import PrepareConfig
from data.prepared_output import SplitCounts
from data.registry import DatasetSpec
from data.vocabulary import Vocabulary

DEFAULT_ROUNDS_PER_PIPELINE = 8
DEFAULT_PART_BYTES = 64 << 20  # of the log, read by one worker
SAMPLE_SIZE = 100_000  # session times that place the bucket bounds
BATCH_IDS = 4096  # ids whose sessions are cut in one call
_REPORT = "report"
_PARTS = "parts"
_COUNTS = "counts"
_ITEMS = "items"

# A session while it is filtered: (first row of its id, rank in its id, items, event times in ms,
# time of its last row in ms); items and times in time order.
Session = Tuple[int, int, Tuple[str, ...], Tuple[int, ...], int]
# A session left by the filters: (time in the session time unit, first row of its id, rank in its
# id, items, event times in ms). The first three are its place in the time order.
Ordered = Tuple[int, int, int, Tuple[str, ...], Tuple[int, ...]]


def _report(name: str, value) -> beam.pvalue.TaggedOutput:
  return beam.pvalue.TaggedOutput(_REPORT, (name, value))


# 1. read ------------------------------------------------------------------------------------------


class _ReadPart(beam.DoFn):
  """A part of the log (`data.events_reader.FilePart`; None: the whole file) as `(id, [(time
  ms, part, row in the part, item id), ...])`, one element per id and chunk; per part its rows,
  rows skipped, id kinds and first error to `_PARTS`."""

  def __init__(self, config: EventsConfig, chunk_bytes: int):
    self.config, self.chunk_bytes = config, chunk_bytes

  def process(self, numbered_part: Tuple[int, Optional[FilePart]]) -> Iterator:
    number, part = numbered_part
    reader, error = None, None
    try:
      reader = EventReader(self.config, self.chunk_bytes, part)
      for chunk in reader:
        keys = chunk.keys.tolist() if isinstance(chunk.keys, np.ndarray) else \
            chunk.keys.to_pylist()
        items = reader.catalogue.raw_ids(chunk.items)
        by_key: Dict = {}
        for key, when, row, item in zip(keys, chunk.times.tolist(), chunk.rows.tolist(), items):
          by_key.setdefault(key, []).append((when, number, row, item))
        yield from by_key.items()
    except EventLogError as found:
      error = found
    if reader is not None:
      reader.close()
    yield beam.pvalue.TaggedOutput(_PARTS, (number, (
        reader.rows_read if reader else 0, reader.rows_skipped if reader else 0,
        reader.id_kinds() if reader else (None, None), error)))


def _row_offsets(parts: List[Tuple[int, Tuple]]) -> Dict[int, int]:
  """Per part, the rows of the parts before it."""
  offsets, before = {}, 0
  for number, (rows, *_) in sorted(parts):
    offsets[number] = before
    before += rows
  return offsets


# 2. sessions --------------------------------------------------------------------------------------


class _CutSessions(beam.DoFn):
  """A batch of ids' events -> their sessions (a batch of `Session`s), by `events.cut_sessions`;
  the sizes per step to the report, and with `top_items` per item (events, (id's first row,
  position)) to `_ITEMS`."""

  def __init__(self, config: EventsConfig):
    self.config = config

  def process(self, batch: List, offsets: Dict[int, int]) -> Iterator:
    sessions = []
    rows = [(index, when, offsets[part] + row, item) for index, (_, chunks) in enumerate(batch)
            for chunk in chunks for when, part, row, item in chunk]
    names, codes = np.unique(np.array([row[3] for row in rows], object), return_inverse=True)
    key, when, row = (np.array([values[k] for values in rows], np.int64) for k in range(3))
    cut = events.cut_sessions(self.config, key, when, row=row, item=codes)
    items, times = names[cut.item].tolist(), cut.time.tolist()
    bounds = np.append(0, np.cumsum(np.bincount(cut.session, minlength=len(cut.seq)))).tolist()
    for index, (key_row, seq, last_time) in enumerate(zip(cut.key_row.tolist(), cut.seq.tolist(),
                                                          cut.last_time.tolist())):
      start, stop = bounds[index], bounds[index + 1]
      sessions.append((key_row, seq, tuple(items[start:stop]), tuple(times[start:stop]),
                       last_time))
    yield sessions
    yield _report("sizes", (*cut.sizes.tolist(), len(cut.seq)))
    if self.config.top_items:
      first: Dict[str, Tuple[int, Tuple[int, int]]] = {}
      for item, key_row, position in zip(items, cut.event_key_row.tolist(),
                                         cut.position.tolist()):
        count, seen = first.get(item, (0, (key_row, position)))
        first[item] = (count + 1, min(seen, (key_row, position)))
      for item, totals in first.items():
        yield beam.pvalue.TaggedOutput(_ITEMS, (item, totals))


def _item_totals(values: Iterable[Tuple[int, Tuple[int, int]]]) -> Tuple[int, Tuple[int, int]]:
  """Events of an item, and its first appearance (id's first row, position in the id)."""
  values = list(values)
  return sum(count for count, _ in values), min(first for _, first in values)


# 3. filters ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _MaskState:
  """The filters after some rounds: the items kept (None: all), and whether they stopped."""
  items: Optional[frozenset]
  stopped: bool = False


class _FilterRound(beam.DoFn):
  """One round of `events.filter_round` over a batch of sessions: the sessions long enough go on
  (a batch) with the items the mask keeps; their counted items go to `_COUNTS`, the round's
  counts to the report."""

  def __init__(self, config: EventsConfig, round_number: int):
    self.config, self.round_number = config, round_number

  def process(self, batch: List[Session], state: _MaskState) -> Iterator:
    if state.stopped:
      yield batch
      return
    mask = state.items
    items = [item for session in batch for item in session[2]]
    lengths = [len(session[2]) for session in batch]
    result = events.filter_round(
        self.config.min_session_length, np.repeat(np.arange(len(batch)), lengths), len(batch),
        np.array([mask is None or item in mask for item in items], bool),
        None if self.round_number == 1 else np.ones(len(items), bool))
    yield beam.pvalue.TaggedOutput(_REPORT, (*result.before.tolist(), *result.after.tolist(),
                                             int(result.changed)))
    counted, kept, start = result.counted.tolist(), [], 0
    for (key_row, seq, session_items, times, last_time), length in zip(batch, lengths):
      chosen = [k for k in range(length) if counted[start + k]]
      start += length
      if chosen:  # long enough
        kept.append((key_row, seq, tuple(session_items[k] for k in chosen),
                     tuple(times[k] for k in chosen), last_time))
    for item, count in collections.Counter(item for item, keep in zip(items, counted)
                                           if keep).items():
      yield beam.pvalue.TaggedOutput(_COUNTS, (item, count))
    if kept:
      yield kept


def _next_mask(_, state: _MaskState, kept: List[str], rare: bool, counts: Tuple,
               config: EventsConfig) -> _MaskState:
  """The mask after a round: the items with enough support; stopped as `Steps.add_round` says."""
  if state.stopped:
    return state
  changed = bool(counts[4]) or rare
  return _MaskState(frozenset(kept), not config.filter_until_stable or not changed)


def _round_report(_, state: _MaskState, rare: bool, counts: Tuple,
                  round_number: int) -> List[Tuple]:
  """The report line of a round that ran (none after the rounds stopped)."""
  return [] if state.stopped else [("round", (round_number, counts, rare))]


class _Alive(beam.DoFn):
  """The sessions left by the final mask, long enough, with their time (`Ordered`)."""

  def __init__(self, config: EventsConfig):
    self.config = config
    self.unit_ms = TIME_UNITS_MS[config.session_time_unit]

  def process(self, batch: List[Session], state: _MaskState) -> Iterator[Ordered]:
    if not state.stopped:  # the filters go on in another pipeline
      return
    for key_row, seq, items, times, last_time in batch:
      kept = [k for k, item in enumerate(items) if state.items is None or item in state.items]
      if len(kept) >= self.config.min_session_length:
        when = times[kept[-1]] if self.config.session_time == "end" else last_time
        yield (when // self.unit_ms, key_row, seq, tuple(items[k] for k in kept),
               tuple(times[k] for k in kept))


# 4. order and split -------------------------------------------------------------------------------


def _sum_tuples(rows: Iterable[Sequence[int]], width: int) -> Tuple[int, ...]:
  total = [0] * width
  for row in rows:
    total = [a + b for a, b in zip(total, row)]
  return tuple(total)


def _sum_of(width: int) -> beam.CombineGlobally:
  return beam.CombineGlobally(lambda rows: _sum_tuples(rows, width))


def _bucket_bounds(sample: List[int], totals: Tuple[int, int, Optional[int]],
                   memory_bytes: int) -> np.ndarray:
  """Time bounds of the buckets: as many as the memory budget asks for the events left."""
  num_buckets = max(1, math.ceil(totals[0] * events.BUCKET_BYTES_PER_EVENT / memory_bytes))
  return events.bucket_bounds(np.sort(np.array(sample, np.int64)), num_buckets)


def _bucket_of(time_: int, bounds: np.ndarray) -> int:
  return int(np.searchsorted(bounds, time_, side="right"))


def _order_totals(rows: Iterable[Tuple[int, int, int]]) -> Tuple[int, int, Optional[int]]:
  """(events, sessions, latest time) of `Ordered` sessions given as (events, 1, time)."""
  events_, sessions, latest = 0, 0, None
  for count, one, when in rows:
    events_, sessions = events_ + count, sessions + one
    latest = when if latest is None else max(latest, when)
  return events_, sessions, latest


@dataclasses.dataclass(frozen=True)
class _Split:
  """The test split's rule (`events.TestSplit`), with the oldest test session's order for a
  fraction; or the error that the split cannot be made."""
  rule: Optional[events.TestSplit]
  cut: Optional[Tuple[int, int, int]] = None
  error: Optional[EventLogError] = None

  def side(self, config: EventsConfig, session: Ordered) -> int:
    if self.rule is None or (not config.test_days and self.cut is None):
      return 0
    return int(events.split_side(config, *(np.array([value]) for value in session[:3]),
                                 self.rule.split_time, self.cut)[0])


def _test_rule(_, totals, config: EventsConfig) -> _Split:
  try:
    return _Split(events.TestSplit.of(config, totals[2] or 0, totals[1]))
  except EventLogError as error:
    return _Split(None, error=error)


class _FindCut(beam.PTransform):
  """The first session in time order at which the running sum of `weight` passes `threshold`:
  `(order, running sum with it)`, or None. Buckets' sums place it in one bucket, which alone is
  sorted."""

  def __init__(self, bounds, threshold, weight):
    super().__init__()
    self.bounds, self.threshold, self.weight = bounds, threshold, weight

  def expand(self, sessions):
    weighted = sessions | "weigh" >> beam.Map(lambda s, bounds: (_bucket_of(s[0], bounds), s),
                                              bounds=self.bounds)
    sums = (weighted | "bucket weights" >> beam.Map(lambda b_s, w: (b_s[0], w(b_s[1])),
                                                    w=self.weight)
            | beam.CombinePerKey(sum))
    place = (sessions.pipeline | "start" >> beam.Create([None])
             | "place" >> beam.Map(_cut_bucket, sums=beam.pvalue.AsDict(sums),
                                   threshold=self.threshold))
    return (weighted
            | "in its bucket" >> beam.Filter(lambda b_s, place: place is not None and
                                             b_s[0] == place[0],
                                             place=beam.pvalue.AsSingleton(place))
            | "one key" >> beam.Map(lambda b_s: (None, b_s[1]))
            | beam.GroupByKey()
            | "walk" >> beam.FlatMap(_walk, place=beam.pvalue.AsSingleton(place),
                                     threshold=self.threshold, weight=self.weight))


def _cut_bucket(_, sums: Dict[int, int], threshold: Optional[int]) -> Optional[Tuple[int, int]]:
  """(bucket holding the cut, the weights before it), or None."""
  if threshold is None or threshold < 0:
    return None
  before = 0
  for bucket in sorted(sums):
    if before + sums[bucket] > threshold:
      return bucket, before
    before += sums[bucket]
  return None


def _walk(keyed_sessions, place, threshold, weight):
  """The cut among the sessions of its bucket (`(None, sessions)`), walked in time order."""
  running = place[1]
  for session in sorted(keyed_sessions[1], key=lambda s: s[:3]):
    running += weight(session)
    if running > threshold:
      yield session[:3], running
      return


def _examples(session: Ordered, min_prefix_length: int) -> int:
  return max(len(session[3]) - min_prefix_length, 0)


class _KeepSeen(beam.DoFn):
  """A test session's events of items seen in training (`events.keep_seen_items`); the session
  if long enough, with its new time; its counts to the report."""

  def __init__(self, config: EventsConfig):
    self.config = config

  def process(self, session: Ordered, in_train: frozenset) -> Iterator:
    time_, key_row, seq, items, times = session
    keep, _, kept, new_time = events.keep_seen_items(
        self.config, np.array([time_]), np.array([len(items)]),
        np.array([item in in_train for item in items], bool), np.array(times, np.int64))
    yield _report("test_before", (len(items), 1))
    if keep[0]:
      kept = np.flatnonzero(kept).tolist()
      yield (int(new_time[0]), key_row, seq, tuple(items[k] for k in kept),
             tuple(times[k] for k in kept))


def _keep_examples(session: Ordered, cut, min_prefix_length: int, drop: int):
  """A training session as `train_examples_divisor` keeps it: whole, cut or not at all."""
  if drop < 0:
    yield session
    return
  if cut is None or session[:3] < cut[0]:
    return
  if session[:3] == cut[0]:  # its newest prefixes are not kept
    length = cut[1] - drop + min_prefix_length
    session = (*session[:3], session[3][:length], session[4][:length])
  yield session


# 5. write -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Splits written from one time order: (name, sessions, shards asked) each, in order; the
  vocabulary's index of each item id."""
  splits: Tuple[Tuple[str, int, int], ...]
  index_of: Dict[str, int]


class _WritePieces(beam.DoFn):
  """One bucket's sessions, sorted, written as pieces of the shards they fall in:
  `<pieces>/<split>-<shard>-<bucket>.tfrecord`; one report line per piece."""

  def __init__(self, pieces: str, min_prefix_length: int):
    self.pieces, self.min_prefix_length = pieces, min_prefix_length

  def process(self, bucket_sessions, offsets: Dict[int, int], layout: _Layout) -> Iterator:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (the workers' TensorFlow)
    from data.tfrecord import serialize_session, shard_sizes  # pylint: disable=g-import-not-at-top
    bucket, sessions = bucket_sessions
    position = sum(count for other, count in offsets.items() if other < bucket)
    starts, first = [], 0
    for name, count, shards in layout.splits:
      ends = np.cumsum(shard_sizes(count, shards))
      starts.append((name, first, ends))
      first += count
    open_piece, writer = None, None
    try:
      for session in sorted(sessions, key=lambda s: s[:3]):
        name, first, ends = [entry for entry in starts if entry[1] <= position][-1]
        index = position - first
        shard = int(np.searchsorted(ends, index, side="right"))
        if open_piece is None or open_piece[:2] != [name, shard]:
          if writer is not None:
            writer.close()
            yield "piece", tuple(open_piece)
          path = f"{self.pieces}/{name}-{shard:05d}-{bucket:09d}.tfrecord"
          open_piece, writer = [name, shard, bucket, 0, 0, 0, path], tf.io.TFRecordWriter(path)
        items = [layout.index_of[item] for item in session[3]]
        writer.write(serialize_session(items, index))
        open_piece[3] += 1
        open_piece[4] += max(len(items) - self.min_prefix_length, 0)
        open_piece[5] += len(items)
        position += 1
    finally:
      if writer is not None:
        writer.close()
    if open_piece is not None:
      yield "piece", tuple(open_piece)


def _layout(_, vocabulary: Vocabulary, splits) -> _Layout:
  return _Layout(tuple(splits), vocabulary.index_of())


def _validation(_, kept: Tuple[int, ...], config: PrepareConfig) -> Tuple[int, Optional[Exception]]:
  try:
    return events.validation_sessions(config.events.path, kept[0], config.validation_fraction), None
  except EventLogError as error:
    return 0, error


def _dropped(_, train: Tuple[int, ...], config: EventsConfig) -> Tuple[int, Optional[Exception]]:
  try:
    return events.dropped_examples(config, config.path, train[2]), None
  except EventLogError as error:
    return -1, error


# The pipeline -------------------------------------------------------------------------------------


def _counts(sessions, label: str, min_prefix_length: int):
  """(sessions, clicks, examples) of `Ordered` sessions."""
  return (sessions
          | f"{label} counts" >> beam.Map(lambda s: (1, len(s[3]), _examples(s, min_prefix_length)))
          | f"{label} sum" >> _sum_of(3))


def _distinct_items(sessions, label: str):
  return (sessions | f"{label} items" >> beam.FlatMap(lambda s: s[3])
          | f"{label} distinct" >> beam.Distinct()
          | f"{label} list" >> beam.combiners.ToList())


def _singleton(pipeline, label: str, function, **side_inputs):
  """A one-element collection: `function(None, **side_inputs)`."""
  return (pipeline | f"{label} start" >> beam.Create([None])
          | label >> beam.Map(function, **side_inputs))


def _read(pipeline: beam.Pipeline, events_config: EventsConfig, resources: ImportResources,
          part_bytes: int, reports: List):
  """Stages 1-2: the sessions (`Session`) and the first item mask (`_MaskState`)."""
  parts = plan_parts(events_config, part_bytes)
  read = (pipeline | "parts" >> beam.Create(list(enumerate(parts)))
          | "spread parts" >> beam.Reshuffle()
          | "read" >> beam.ParDo(_ReadPart(events_config, resources.chunk_bytes))
          .with_outputs(_PARTS, main="events"))
  parts_read = read[_PARTS] | "parts read" >> beam.combiners.ToList()
  reports.append(parts_read | beam.Map(lambda lines: ("parts", sorted(lines))))
  offsets = beam.pvalue.AsSingleton(parts_read | "row offsets" >> beam.Map(_row_offsets))
  cut = (read["events"] | "by id" >> beam.GroupByKey()
         | "batches of ids" >> beam.BatchElements(max_batch_size=BATCH_IDS)
         | "sessions" >> beam.ParDo(_CutSessions(events_config), offsets=offsets).with_outputs(
             _REPORT, _ITEMS, main="sessions"))
  reports.append(cut[_REPORT] | "sizes" >> beam.Map(lambda line: line[1])
                 | "sum sizes" >> _sum_of(4) | beam.Map(lambda total: ("sizes", total)))
  if events_config.top_items:
    top = (cut[_ITEMS] | "item totals" >> beam.CombinePerKey(_item_totals)
           | "top items" >> beam.combiners.Top.Smallest(
               events_config.top_items, key=lambda item: (-item[1][0], item[1][1])))
    state = top | "first mask" >> beam.Map(
        lambda chosen: _MaskState(frozenset(item for item, _ in chosen)))
  else:
    state = pipeline | "no mask" >> beam.Create([_MaskState(None)])
  return cut["sessions"], state


def _saved_sessions(temp: str, first_round: int) -> str:
  return f"{temp}/sessions-{first_round:05d}"


def _encode(batch: List[Session]) -> str:
  return base64.b64encode(pickle.dumps(batch)).decode("ascii")


def _decode(line: str) -> List[Session]:
  return pickle.loads(base64.b64decode(line))


def build_pipeline(pipeline: beam.Pipeline, config: PrepareConfig, min_prefix_length: int,
                   resources: ImportResources, temp: str, first_round: int = 1,
                   mask: Optional[_MaskState] = None,
                   rounds_per_pipeline: int = DEFAULT_ROUNDS_PER_PIPELINE,
                   part_bytes: int = DEFAULT_PART_BYTES) -> None:
  """Adds the import's stages (module docstring) to `pipeline`: from the log (`first_round` 1),
  or from the sessions and `mask` a pipeline saved before round `first_round`. They write the
  pieces into `<temp>/pieces` and the report into `<temp>/report-<first_round>.pickle`."""
  events_config = config.events
  as_single, as_dict = beam.pvalue.AsSingleton, beam.pvalue.AsDict
  reports = []
  if first_round == 1:
    sessions, state = _read(pipeline, events_config, resources, part_bytes, reports)
  else:
    sessions = (pipeline | "saved" >> beam.io.ReadFromText(
        _saved_sessions(temp, first_round) + "*") | "decode" >> beam.Map(_decode))
    state = pipeline | "saved mask" >> beam.Create([mask])

  rounds = rounds_per_pipeline if events_config.filter_until_stable else 1
  for number in range(first_round, first_round + rounds):
    label = f"round {number}"
    result = sessions | label >> beam.ParDo(_FilterRound(events_config, number),
                                            state=as_single(state)).with_outputs(
                                                _REPORT, _COUNTS, main="sessions")
    counts = result[_COUNTS] | f"{label} item counts" >> beam.CombinePerKey(sum)
    kept = (counts | f"{label} supported" >> beam.Filter(
        lambda item: item[1] >= events_config.min_item_support)
            | f"{label} kept" >> beam.Keys() | f"{label} mask" >> beam.combiners.ToList())
    rare = (counts | f"{label} rare items" >> beam.Map(
        lambda item: item[1] < events_config.min_item_support)
            | f"{label} any rare" >> beam.CombineGlobally(any))
    totals = result[_REPORT] | f"{label} sum" >> _sum_of(5)
    reports.append(_singleton(pipeline, f"{label} report", _round_report,
                              state=as_single(state), rare=as_single(rare),
                              counts=as_single(totals), round_number=number)
                   | f"{label} line" >> beam.FlatMap(lambda lines: lines))
    state = _singleton(pipeline, f"{label} next mask", _next_mask, state=as_single(state),
                       kept=as_single(kept), rare=as_single(rare), counts=as_single(totals),
                       config=events_config)
    sessions = result["sessions"]
  reports.append(state | "stopped" >> beam.Map(lambda final: ("mask", final)))
  _ = (sessions | "to save" >> beam.Filter(lambda _, final: not final.stopped,
                                           final=as_single(state))
       | "encode" >> beam.Map(_encode)
       | "save" >> beam.io.WriteToText(_saved_sessions(temp, first_round + rounds)))

  alive = sessions | "alive" >> beam.ParDo(_Alive(events_config), state=as_single(state))
  order_totals = (alive | "order counts" >> beam.Map(lambda s: (len(s[3]), 1, s[0]))
                  | "order totals" >> beam.CombineGlobally(_order_totals))
  reports.append(order_totals | beam.Map(lambda total: ("alive", total)))
  sample = (alive | "times" >> beam.Map(lambda s: s[0])
            | "sample" >> beam.combiners.Sample.FixedSizeGlobally(SAMPLE_SIZE))
  bounds = sample | "bounds" >> beam.Map(_bucket_bounds, totals=as_single(order_totals),
                                         memory_bytes=resources.memory_bytes)
  reports.append(bounds | beam.Map(lambda b: ("buckets", len(b) + 1)))
  bounds = as_single(bounds)

  # The test split.
  split = _singleton(pipeline, "test rule", _test_rule, totals=as_single(order_totals),
                     config=events_config)
  if not events_config.test_days:
    rank = split | "rank" >> beam.Map(lambda s: None if s.rule is None else s.rule.rank)
    oldest_test = alive | "oldest test" >> _FindCut(bounds, as_single(rank), lambda s: 1)
    split = split | "with cut" >> beam.Map(
        lambda s, cut: dataclasses.replace(s, cut=None if cut is None else cut[0]),
        cut=as_single(oldest_test, default_value=None))
  reports.append(split | beam.Map(lambda s: ("split", s)))
  sides = alive | "sides" >> beam.Partition(
      lambda s, n, rule: {0: 0, 1: 1, -1: 2}[rule.side(events_config, s)], 3,
      rule=as_single(split))
  train, test, dropped = sides[0], sides[1], sides[2]
  train_counts = _counts(train, "train", min_prefix_length)
  reports.append(train_counts | beam.Map(lambda c: ("train", c)))
  reports.append(dropped | "dropped" >> beam.combiners.Count.Globally()
                 | beam.Map(lambda n: ("dropped", n)))
  in_train = _distinct_items(train, "in train") | "in train set" >> beam.Map(frozenset)

  # Test sessions: items seen in training.
  test = test | "seen items" >> beam.ParDo(_KeepSeen(events_config),
                                           in_train=as_single(in_train)).with_outputs(
                                               _REPORT, main="sessions")
  reports.append(test[_REPORT] | beam.Map(lambda line: line[1]) | "test before" >> _sum_of(2)
                 | beam.Map(lambda total: ("test_before", total)))
  test = test["sessions"]
  test_counts = _counts(test, "test", min_prefix_length)
  reports.append(test_counts | beam.Map(lambda c: ("test", c)))

  # The examples divisor, then the vocabulary.
  drop = _singleton(pipeline, "divisor", _dropped, train=as_single(train_counts),
                    config=events_config)
  reports.append(drop | beam.Map(lambda d: ("divisor", d)))
  kept_train = train
  if events_config.train_examples_divisor > 1:
    cut_at = train | "divisor cut" >> _FindCut(
        bounds, as_single(drop | beam.Map(lambda d: d[0])),
        lambda s: _examples(s, min_prefix_length))
    kept_train = train | "kept examples" >> beam.FlatMap(
        _keep_examples, cut=as_single(cut_at, default_value=None),
        min_prefix_length=min_prefix_length, drop=as_single(drop | beam.Map(lambda d: d[0])))
  kept_counts = _counts(kept_train, "kept", min_prefix_length)
  kept_items = _distinct_items(kept_train, "kept")
  vocabulary = _singleton(pipeline, "vocabulary", lambda _, kept, test_items: Vocabulary.from_ids(
      kept, test_items), kept=as_single(kept_items),
                          test_items=as_single(_distinct_items(test, "test")))
  reports.append(vocabulary | beam.Map(lambda v: ("vocabulary", v)))
  reports.append(kept_items | beam.Map(lambda items: ("items_in_train", len(items))))
  num_valid = _singleton(pipeline, "validation", _validation, kept=as_single(kept_counts),
                         config=config)
  reports.append(num_valid | beam.Map(lambda v: ("validation", v)))

  # Write: training and validation sessions in one time order, test sessions in another.
  pieces = f"{temp}/pieces"
  shards, evaluation_shards = config.num_shards, min(2, config.num_shards)
  layouts = {
      "train": _singleton(pipeline, "train layout", lambda _, kept, valid, vocabulary: _layout(
          None, vocabulary, [("train", kept[0] - valid[0], shards),
                             ("valid", valid[0], evaluation_shards)]),
                          kept=as_single(kept_counts), valid=as_single(num_valid),
                          vocabulary=as_single(vocabulary)),
      "test": _singleton(pipeline, "test layout", lambda _, test_counts, vocabulary: _layout(
          None, vocabulary, [("test", test_counts[0], evaluation_shards)]),
                         test_counts=as_single(test_counts), vocabulary=as_single(vocabulary)),
  }
  for name, ordered in (("train", kept_train), ("test", test)):
    bucketed = ordered | f"{name} buckets" >> beam.Map(
        lambda s, bounds: (_bucket_of(s[0], bounds), s), bounds=bounds)
    offsets = (bucketed | f"{name} bucket sizes" >> beam.Map(lambda b_s: (b_s[0], 1))
               | f"{name} bucket sums" >> beam.CombinePerKey(sum))
    reports.append(bucketed | f"{name} by bucket" >> beam.GroupByKey()
                   | f"{name} pieces" >> beam.ParDo(
                       _WritePieces(pieces, min_prefix_length), offsets=as_dict(offsets),
                       layout=as_single(layouts[name])))
  (reports | "report" >> beam.Flatten() | "all of it" >> beam.combiners.ToList()
   | "write report" >> beam.Map(_write_report, path=f"{temp}/report-{first_round:05d}.pickle"))


def _write_report(lines: List, path: str) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(path, "wb") as out:
    out.write(pickle.dumps(lines))


# The launching process ----------------------------------------------------------------------------


@dataclasses.dataclass
class _Report:
  """The report's lines by name (pieces and rounds as lists)."""
  lines: Dict
  pieces: List[Tuple]
  rounds: Dict[int, Tuple]

  def add(self, path: str) -> "_Report":
    """Adds the lines of the report file `path` (a later pipeline's lines replace those of an
    earlier one)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, "rb") as source:
      lines = pickle.loads(source.read())
    report = self
    for name, value in lines:
      if name == "piece":
        report.pieces.append(value)
      elif name == "round":
        report.rounds[value[0]] = value[1:]
      else:
        report.lines[name] = value
    return report


def _check(report: _Report, config: EventsConfig, chunk_bytes: int) -> events.Steps:
  """Replays the chunked importer's steps and checks from the report, in its order (the log
  read again in chunks of `chunk_bytes` to find its first error, if a part found one).

  Raises:
    EventLogError: as the chunked importer.
  """
  lines = report.lines
  parts = [part for _, part in lines["parts"]]
  kinds = [{part[2][role] for part in parts} - {None} for role in (0, 1)]
  errors = [part[3] for part in parts if part[3] is not None]
  if errors or max(map(len, kinds)) > 1:
    raise _first_error(config, chunk_bytes, errors)
  rows, skipped = (sum(part[k] for part in parts) for k in (0, 1))
  sizes = lines.get("sizes", (0, 0, 0, 0))
  if not sizes[0]:
    raise EventLogError(config.path, "the log has no events" + (
        f" ({skipped:,} rows skipped by --drop_missing)" if skipped else ""))
  logging.info("Read %s rows (%s skipped) in %d parts; sessions sorted in %d time buckets",
               f"{rows:,}", f"{skipped:,}", len(parts), lines["buckets"])
  steps = events.Steps(config.path)
  steps.add_read(config, np.array(sizes[:3]), sizes[3])
  for number in range(1, len(report.rounds) + 1):
    counts, rare = report.rounds[number]
    if steps.add_round(config, number, events.RoundCounts(
        np.array(counts[0:2]), np.array(counts[2:4]), bool(counts[4])), rare):
      break
  events_left, sessions_left, _ = lines["alive"]
  steps.add(events.final_filter_step(config), events_left, sessions_left)
  steps.check_not_empty()
  split: _Split = lines["split"]
  if split.error is not None:
    raise split.error
  train, test = lines["train"], lines["test"]
  test_before = lines["test_before"]
  split.rule.check(config.path, train[0], test_before[1], lines["dropped"])
  steps.add_test(config, split.rule.description, test_before, _split_counts(test, 1))
  for name in ("divisor", "validation"):
    if lines[name][1] is not None:
      raise lines[name][1]
  return steps


def _first_error(config: EventsConfig, chunk_bytes: int,
                 errors: List[EventLogError]) -> EventLogError:
  """The error the chunked importer finds first: parts read at the same time find errors in
  their own order, and ids of another kind than the file's first (each part takes the kind of
  its own first id), so the file is read again in order up to its first error."""
  reader = EventReader(config, chunk_bytes)
  try:
    for _ in reader:
      pass
  except EventLogError as error:
    return error
  finally:
    reader.close()
  return errors[0] if errors else EventLogError(config.path, "mixed id types across the file")


def _split_counts(counts: Tuple[int, int, int], min_prefix_length: int) -> SplitCounts:
  sessions, clicks, examples = counts
  return SplitCounts(min_prefix_length, sessions, clicks, examples)


def _assemble(directory: str, report: _Report, config: PrepareConfig,
              min_prefix_length: int) -> Tuple[Dict[str, List[Dict]], Dict[str, SplitCounts]]:
  """Concatenates each shard's pieces in bucket order into `directory`; returns the manifest
  entries and the counts per split."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data.prepared import file_sha256  # pylint: disable=g-import-not-at-top
  from data.tfrecord import shard_name, shard_sizes  # pylint: disable=g-import-not-at-top
  pieces: Dict[Tuple[str, int], List[Tuple]] = {}
  for piece in report.pieces:
    pieces.setdefault(tuple(piece[:2]), []).append(piece)
  shards, counts = {}, {}
  for split in ("train", "valid", "test"):
    written = [piece for key, group in pieces.items() if key[0] == split for piece in group]
    total = sum(piece[3] for piece in written)
    asked = config.num_shards if split == "train" else min(2, config.num_shards)
    count = len(shard_sizes(total, asked))
    entries = []
    for shard in range(count):
      name = shard_name(split, shard, count)
      group = sorted(pieces.get((split, shard), []), key=lambda piece: piece[2])
      with open(os.path.join(directory, name), "wb") as out:
        for piece in group:
          with tf.io.gfile.GFile(piece[6], "rb") as source:
            while True:
              block = source.read(16 << 20)
              if not block:
                break
              out.write(block)
      entries.append({"file": name, "sessions": sum(piece[3] for piece in group),
                      "examples": sum(piece[4] for piece in group),
                      "sha256": file_sha256(os.path.join(directory, name))})
    shards[split] = entries
    counts[split] = _split_counts((total, sum(piece[5] for piece in written),
                                   sum(piece[4] for piece in written)), min_prefix_length)
  return shards, counts


def _temporary_folder(parent: str, name: str):
  """A new temporary folder in `parent` (local or a URI), as a context that removes it."""
  if "://" not in parent:
    return events.temporary_workspace(parent, name)
  import contextlib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @contextlib.contextmanager
  def remote():
    folder = f"{parent.rstrip('/')}/.{name}.import-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(folder)
    try:
      yield folder
    finally:
      if tf.io.gfile.exists(folder):
        tf.io.gfile.rmtree(folder)
  return remote()


def _runner(options: PipelineOptions):
  """For the DirectRunner (the default), the in-process runner it runs a batch pipeline with,
  `FnApiRunner`: Beam's DirectRunner first tries to download its Prism runner (a Go binary) from
  the network, and runs it where it can. None for another runner: Beam makes it from the
  options."""
  if options.view_as(StandardOptions).runner in (None, "DirectRunner"):
    # pylint: disable=g-import-not-at-top
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    return FnApiRunner()
  return None


def import_events(config: PrepareConfig, spec: DatasetSpec, directory: str,
                  resources: ImportResources = ImportResources(),
                  pipeline_args: Sequence[str] = (),
                  rounds_per_pipeline: int = DEFAULT_ROUNDS_PER_PIPELINE,
                  part_bytes: int = DEFAULT_PART_BYTES) -> None:
  """Imports `config.events` into the prepared folder `directory` with Beam pipelines run by
  `pipeline_args` (Beam's pipeline options, e.g. `--runner=DataflowRunner --project=...`; none:
  the DirectRunner); the same folder as `data.events.import_events` (see the module doc).

  Raises:
    EventLogError: bad input (naming the file, column and row), or a log that the filters or
      the split leave empty (naming the step); nothing is written.
    ValueError: `rounds_per_pipeline` below 1.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if rounds_per_pipeline < 1:
    raise ValueError("--rounds_per_pipeline must be >= 1")
  started = time.perf_counter()
  options = PipelineOptions(list(pipeline_args))
  parent = resources.temp_dir or os.path.dirname(os.path.abspath(directory))
  with _temporary_folder(parent, spec.name) as temp:
    tf.io.gfile.makedirs(f"{temp}/pieces")
    report, first_round, mask = _Report({}, [], {}), 1, None
    while mask is None or not mask.stopped:
      with beam.Pipeline(runner=_runner(options), options=options) as pipeline:
        build_pipeline(pipeline, config, spec.min_prefix_length, resources, temp, first_round,
                       mask, rounds_per_pipeline, part_bytes)
      mask = report.add(f"{temp}/report-{first_round:05d}.pickle").lines["mask"]
      first_round += rounds_per_pipeline
      if not mask.stopped:
        logging.info("The filters go on after round %d: one more pipeline", first_round - 1)
    ran = time.perf_counter() - started
    steps = _check(report, config.events, resources.chunk_bytes)
    rows, skipped = (sum(part[k] for _, part in report.lines["parts"]) for k in (0, 1))
    with atomic_directory(directory) as temporary:
      shards, counts = _assemble(temporary, report, config, spec.min_prefix_length)
      events.write_imported_files(temporary, config, spec, report.lines["vocabulary"], counts,
                                  report.lines["items_in_train"], rows, skipped, steps, shards)
  logging.info("Imported %s with Beam (%s); seconds: pipelines %.2f, write %.2f",
               config.events.path, options.view_as(StandardOptions).runner or "DirectRunner",
               ran, time.perf_counter() - started - ran)
