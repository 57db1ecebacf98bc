r"""Writes a synthetic click log of any size, block by block, for the event-log importer.

    python -m benchmarks.event_log --output=/tmp/clicks.csv.gz --events=50000000
        [--format=csv|tsv|parquet] [--string_ids] [--time_format=iso8601|seconds] [--seed=0]

The log has the columns `session_id`, `user_id`, `item_id` and `timestamp`, one row per click,
in time order block by block (`BLOCK_EVENTS` clicks a block; a session that starts near the end
of a block may have clicks after the first clicks of the next one, as in a real log, so the file
is not sorted by time or by session). Session lengths are 1 + a geometric draw (mean
`1 + 1 / SESSION_STOP - 1`, at most `MAX_SESSION_CLICKS`), clicks 30 s to 5 min apart; items are
drawn from a Zipf-like popularity over `--items`; each session belongs to a user drawn from a
Zipf-like popularity over `--users`; sessions start uniformly over `--days`. With
`--string_ids` the ids are strings (`s` + 12 hex digits, `u000123`, `SKU-0012345`), otherwise
integers. Times are ISO 8601 UTC (`2021-03-04T05:06:07Z`) or integer seconds since 1970.

The output is gzip-compressed (level 1) when its name ends in `.gz` (CSV and TSV); Parquet files
use Parquet's own compression (snappy). Memory stays at one block whatever `--events` is.
"""

import gzip
import os
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from absl import app
from absl import flags

BLOCK_EVENTS = 1 << 20
SESSION_STOP = 0.25          # each click ends its session with this probability
MAX_SESSION_CLICKS = 50
T0 = 1609459200              # 2021-01-01T00:00:00Z
COLUMNS = ("session_id", "user_id", "item_id", "timestamp")
FORMATS = ("csv", "tsv", "parquet")


def _zipf_ranks(rng: np.random.Generator, size: int, count: int, exponent: float) -> np.ndarray:
  """`count` draws of ranks 0..size-1 with probability proportional to (rank + 1)^-exponent."""
  weights = np.arange(1, size + 1, dtype=np.float64) ** -exponent
  cumulative = np.cumsum(weights)
  return np.minimum(np.searchsorted(cumulative, rng.random(count) * cumulative[-1]), size - 1)


def generate_blocks(num_events: int, num_items: int = 100_000, num_users: int = 1_000_000,
                    days: int = 180, string_ids: bool = False, time_format: str = "iso8601",
                    seed: int = 0, block_events: int = BLOCK_EVENTS) -> Iterator[pa.Table]:
  """Yields the log as `pa.Table` blocks of at most `block_events` rows (see the module doc).

  Raises:
    ValueError: a non-positive size or an unknown `time_format`.
  """
  if min(num_events, num_items, num_users, days, block_events) < 1:
    raise ValueError("num_events, num_items, num_users, days and block_events must be >= 1")
  if time_format not in ("iso8601", "seconds"):
    raise ValueError(f"time_format must be iso8601 or seconds, not {time_format!r}")
  rng = np.random.default_rng(seed)
  item_ids = rng.permutation(num_items) + 1      # popularity rank -> item id
  user_ids = rng.permutation(num_users) + 1
  num_blocks = -(-num_events // block_events)
  block_seconds = days * 86400 / num_blocks
  first_session = 0
  for block in range(num_blocks):
    size = min(block_events, num_events - block * block_events)
    lengths = np.minimum(rng.geometric(SESSION_STOP, size), MAX_SESSION_CLICKS)
    ends = np.cumsum(lengths)
    lengths = lengths[:np.searchsorted(ends, size) + 1]
    lengths[-1] -= ends[len(lengths) - 1] - size  # the block holds exactly `size` clicks
    num_sessions = len(lengths)
    starts = T0 + block * block_seconds + rng.random(num_sessions) * block_seconds
    session = np.repeat(np.arange(first_session, first_session + num_sessions), lengths)
    position = np.arange(size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    gaps = rng.integers(30, 300, size)
    gaps[position == 0] = 0
    offsets = np.cumsum(gaps) - np.repeat(np.cumsum(gaps)[np.cumsum(lengths) - lengths], lengths)
    seconds = (np.repeat(starts, lengths) + offsets).astype(np.int64)
    order = np.argsort(seconds, kind="stable")
    session, seconds = session[order], seconds[order]
    user = user_ids[_zipf_ranks(rng, num_users, num_sessions, 0.8)][session - first_session]
    item = item_ids[_zipf_ranks(rng, num_items, size, 1.0)]
    first_session += num_sessions
    columns = [pa.array(session), pa.array(user), pa.array(item)]
    if string_ids:
      columns = [pa.array([f"s{(value * 0x9E3779B97F4A7C15) % (1 << 48):012x}"
                           for value in session.tolist()]),
                 _strings("u", columns[1], 6), _strings("SKU-", columns[2], 7)]
    if time_format == "iso8601":
      times = pc.strftime(pa.array(seconds, pa.timestamp("s", "UTC")),
                          format="%Y-%m-%dT%H:%M:%SZ")
    else:
      times = pa.array(seconds)
    yield pa.table(columns + [times], names=list(COLUMNS))


def _strings(prefix: str, values: pa.Array, width: int) -> pa.Array:
  """`prefix` + the integer zero-padded to `width` digits."""
  text = pc.utf8_lpad(pc.cast(values, pa.string()), width=width, padding="0")
  return pc.binary_join_element_wise(prefix, text, "")


def write_log(path: str, num_events: int, file_format: str = "csv", **options) -> int:
  """Writes `generate_blocks(num_events, **options)` to `path`; returns the bytes written.

  Args:
    path: the output file; CSV and TSV are gzip-compressed when it ends in `.gz`.
    num_events: clicks in the log.
    file_format: "csv", "tsv" or "parquet".
    **options: `generate_blocks`' other arguments.
  """
  if file_format not in FORMATS:
    raise ValueError(f"format must be one of {FORMATS}, not {file_format!r}")
  blocks = generate_blocks(num_events, **options)
  first = next(blocks)
  if file_format == "parquet":
    with pq.ParquetWriter(path, first.schema) as writer:
      for block in _chain(first, blocks):
        writer.write_table(block)
    return os.path.getsize(path)
  options = pa_csv.WriteOptions(delimiter="\t" if file_format == "tsv" else ",",
                                quoting_style="none", quoting_header="none")
  # gzip level 1: several times faster to write than the default, as readable.
  with (gzip.open(path, "wb", compresslevel=1) if path.endswith(".gz") else
        open(path, "wb")) as stream:
    with pa_csv.CSVWriter(stream, first.schema, write_options=options) as writer:
      for block in _chain(first, blocks):
        writer.write_table(block)
  return os.path.getsize(path)


def _chain(first, rest):
  yield first
  yield from rest


FLAGS = flags.FLAGS


def main(argv):
  del argv
  size = write_log(FLAGS.output, FLAGS.events, FLAGS.format, num_items=FLAGS.items,
                   num_users=FLAGS.users, days=FLAGS.days, string_ids=FLAGS.string_ids,
                   time_format=FLAGS.time_format, seed=FLAGS.seed)
  print(f"wrote {FLAGS.events:,} clicks to {FLAGS.output} ({size / 1e6:,.1f} MB)")
  return 0


if __name__ == "__main__":
  flags.DEFINE_string("output", None, "The log file to write.", required=True)
  flags.DEFINE_integer("events", 1_000_000, "Number of clicks.")
  flags.DEFINE_enum("format", "csv", list(FORMATS), "File format.")
  flags.DEFINE_integer("items", 100_000, "Catalogue size.")
  flags.DEFINE_integer("users", 1_000_000, "Number of users.")
  flags.DEFINE_integer("days", 180, "Days the log spans.")
  flags.DEFINE_bool("string_ids", False, "String session, user and item ids.")
  flags.DEFINE_enum("time_format", "iso8601", ["iso8601", "seconds"], "How times are written.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  app.run(main)
