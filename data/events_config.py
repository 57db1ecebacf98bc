"""What an event-log import does: the options of `python -m data.prepare --events=FILE`.

`EventsConfig` holds every option that changes the imported sessions (one field per command-line
flag of `data.events_flags`, with the flag's help text); it is recorded in the prepared folder's
manifest. `PRESETS` sets the options to a published protocol for a raw dataset file (see
`Preset.exact` for how close each one is to `data.protocols`). `ImportResources` says how the
import runs (chunk size, memory budget, temporary folder), which does not change its result.

The importer's model (`data.events` applies it):
1. Rows: each row is one event with a session or user id, an item id and a time. A row with a
   missing value is an error, or is skipped with `drop_missing` (LESSR's `dropna`).
2. Sessions: the rows of one session id; or the rows of one user cut where the gap between two
   consecutive events is longer than `session_gap_seconds` (a gap of exactly that continues the
   session). Events of a session are in time order (ties in file order).
3. Filters, in this order: `remove_repeats` (an item clicked again right after itself), then
   `max_session_length` (each session's first events), then `top_items` (the items with most
   events; ties to the item met first, sessions in order of their id's first row), then
   `min_session_length`, `min_item_support` (events of items with fewer events, counted over the
   sessions left), `min_session_length` again. With `filter_until_stable` the last three repeat
   until a round removes nothing (LESSR's Gowalla and Last.fm); otherwise they run once (SR-GNN;
   LESSR's Diginetica, with `max_session_length`).
4. A session's time: `end`, its latest event left after the filters (LESSR), or `last_row`, the
   time of its last row in the file before any filter (SR-GNN); floored to `session_time_unit`.
   Sessions are ordered by time, ties by the first row of their id (user), then by start.
5. Test split: the sessions whose time is within `test_days` of the latest session time (at or
   after `latest - test_days`; with `drop_sessions_at_split` a session exactly at it is dropped,
   as SR-GNN's `<` and `>` do), or the newest `test_fraction` of the sessions (`int(fraction *
   sessions)`). Test events whose item no training session has are dropped, then test sessions
   shorter than `min_session_length` (both protocols). With `end`, test sessions are reordered by
   their time after that drop (LESSR).
6. `train_examples_divisor` N > 1 keeps the newest `examples // N` training examples (SR-GNN's
   Yoochoose 1/64 and 1/4: whole sessions, and the oldest kept one cut to its first events).
"""

import dataclasses
import os
from typing import Dict, Optional, Tuple

from data import protocols
from tfrs_attenmixer.config import option

FORMATS = ("csv", "tsv", "parquet")
DELIMITERS = {"csv": ",", "tsv": "\t"}
TIME_FORMATS = ("iso8601", "seconds", "milliseconds", "date")
ID_TYPES = ("auto", "integer", "string")
SESSION_TIMES = ("end", "last_row")
TIME_UNITS_MS = {"ms": 1, "s": 1000, "day": protocols.DAY_SECONDS * 1000}
MS_PER_DAY = TIME_UNITS_MS["day"]


def detect_format(path: str) -> str:
  """`parquet`, `tsv` or `csv` from the file name (a `.gz` suffix is ignored); `csv` when unsure."""
  name = path.lower().removesuffix(".gz")
  if name.endswith((".parquet", ".pq")):
    return "parquet"
  if name.endswith((".tsv", ".tab", ".txt")):
    return "tsv"
  return "csv"


@dataclasses.dataclass(frozen=True)
class EventsConfig:
  """The options of one event-log import (see the module docstring for the model).

  `file_format` and `delimiter` left empty are filled in from the file name; `path` is made
  absolute (a URI such as `gs://bucket/log.csv` is kept as it is).

  Raises:
    ValueError: on construction, for a missing or contradictory option, naming its flag.
  """

  path: str = option("", "The event log: CSV, TSV (either may be gzip-compressed) or Parquet.")
  file_format: str = option("", "csv, tsv or parquet; default: from the file name (.parquet/.pq, "
                            ".tsv/.tab/.txt, else csv; a .gz suffix is ignored).")
  delimiter: str = option("", "CSV/TSV field separator; default , for csv and a tab for tsv.")
  column_names: Tuple[str, ...] = option(
      (), "Names of the columns of a CSV/TSV file without a header line, in order; by default "
      "the first line is the header.")
  session_column: str = option("", "Column of session ids (or give --user_column).")
  user_column: str = option("", "Column of user ids; sessions are cut at gaps longer than "
                            "--session_gap_seconds.")
  session_gap_seconds: float = option(0.0, "With --user_column: a gap between two events of a "
                                      "user longer than this starts a new session.")
  item_column: str = option("", "Column of item ids.")
  time_column: str = option("", "Column of event times.")
  time_format: str = option(
      "iso8601", "iso8601 (2021-03-04T05:06:07[.123][Z|+01:00]; no zone = UTC), seconds or "
      "milliseconds since 1970, date (YYYY-MM-DD), or a strptime pattern such as "
      "%d/%m/%Y %H:%M. Parquet timestamp and date columns need none.")
  time_offset_column: str = option("", "Column of milliseconds added to the time (Diginetica: "
                                   "eventdate + timeframe).")
  id_type: str = option("auto", "auto: a column's ids are integers if its first id is one, "
                        "strings otherwise, and an id of the other kind is an error; integer; "
                        "string: every id as written.")
  drop_missing: bool = option(False, "Skip rows with an empty or missing (NA, null, ...) id or "
                              "time, as LESSR's dropna; otherwise they are an error.")
  remove_repeats: bool = option(False, "Drop an event whose item is the session's previous one.")
  max_session_length: int = option(0, "Keep each session's first N events (0: all).")
  top_items: int = option(0, "Keep only the N items with most events (0: all).")
  min_session_length: int = option(protocols.MIN_SESSION_LENGTH,
                                   "Drop sessions with fewer events.")
  min_item_support: int = option(protocols.MIN_ITEM_SUPPORT,
                                 "Drop events of items with fewer events.")
  filter_until_stable: bool = option(False, "Repeat the session-length and item-support filters "
                                     "until a round removes nothing (LESSR).")
  test_days: int = option(0, "Test split: the sessions of the last N days.")
  test_fraction: float = option(0.0, "Test split: the newest fraction of the sessions.")
  session_time: str = option("end", "A session's time: end (its latest event after the "
                             "filters, LESSR) or last_row (its last row in the file, SR-GNN).")
  session_time_unit: str = option("ms", "Session times are floored to ms, s or day before "
                                  "sessions are ordered and split.")
  drop_sessions_at_split: bool = option(False, "With --test_days: drop the sessions whose time is "
                                        "exactly the split time (SR-GNN).")
  train_examples_divisor: int = option(1, "Keep the newest 1/N of the training examples "
                                       "(SR-GNN's Yoochoose 1/64: 64).")
  preset: str = option("", "The preset the options came from (recorded, changes nothing).")

  def __post_init__(self):
    if not self.path:
      raise ValueError("--events: name the event log file")
    if "://" not in self.path:  # a URI (gs://...) stays as it is
      object.__setattr__(self, "path", os.path.abspath(self.path))
    object.__setattr__(self, "column_names", tuple(self.column_names))
    if not self.file_format:
      object.__setattr__(self, "file_format", detect_format(self.path))
    if self.file_format not in FORMATS:
      raise ValueError(f"--file_format must be one of {', '.join(FORMATS)}, not "
                       f"{self.file_format!r}")
    if self.file_format == "parquet":
      if self.delimiter or self.column_names:
        raise ValueError("--delimiter and --column_names are for CSV/TSV files, not Parquet")
    elif not self.delimiter:
      object.__setattr__(self, "delimiter", DELIMITERS[self.file_format])
    if len(self.delimiter) > 1:
      raise ValueError(f"--delimiter must be one character, not {self.delimiter!r}")
    if len(set(self.column_names)) != len(self.column_names):
      raise ValueError(f"--column_names has a name twice: {','.join(self.column_names)}")
    self._check_columns()
    self._check_filters()
    self._check_split()

  def _check_columns(self) -> None:
    if bool(self.session_column) == bool(self.user_column):
      raise ValueError("name the sessions: --session_column=COLUMN, or --user_column=COLUMN with "
                       "--session_gap_seconds=S (sessions cut at gaps longer than S seconds)")
    if self.user_column and not self.session_gap_seconds > 0:
      raise ValueError("--user_column needs --session_gap_seconds > 0 (a longer gap between two "
                       "events of a user starts a new session)")
    if self.session_column and self.session_gap_seconds:
      raise ValueError("--session_gap_seconds applies to --user_column, not --session_column")
    for flag in ("item_column", "time_column"):
      if not getattr(self, flag):
        raise ValueError(f"--{flag} is required")
    named = [c for c in self.columns().values() if c]
    if len(set(named)) != len(named):
      raise ValueError(f"the session/user, item, time and offset columns must differ: {named}")
    if self.time_format not in TIME_FORMATS and "%" not in self.time_format:
      raise ValueError(f"--time_format must be one of {', '.join(TIME_FORMATS)} or a strptime "
                       f"pattern with %, not {self.time_format!r}")
    if self.id_type not in ID_TYPES:
      raise ValueError(f"--id_type must be one of {', '.join(ID_TYPES)}, not {self.id_type!r}")

  def _check_filters(self) -> None:
    if self.min_session_length < 1 or self.min_item_support < 1:
      raise ValueError("--min_session_length and --min_item_support must be >= 1")
    if self.top_items < 0 or self.max_session_length < 0:
      raise ValueError("--top_items and --max_session_length must be >= 0 (0: no limit)")
    if 0 < self.max_session_length < self.min_session_length:
      raise ValueError(f"--max_session_length={self.max_session_length} is below "
                       f"--min_session_length={self.min_session_length}")

  def _check_split(self) -> None:
    if (self.test_days > 0) == (self.test_fraction > 0):
      raise ValueError("choose one test split: --test_days=N (the sessions of the last N days) "
                       "or --test_fraction=F (the newest fraction F of the sessions)")
    if self.test_days < 0 or not 0 <= self.test_fraction < 1:
      raise ValueError("--test_days must be >= 0 and --test_fraction in [0, 1)")
    if self.drop_sessions_at_split and not self.test_days:
      raise ValueError("--drop_sessions_at_split applies to --test_days")
    if self.session_time not in SESSION_TIMES:
      raise ValueError(f"--session_time must be one of {', '.join(SESSION_TIMES)}")
    if self.session_time_unit not in TIME_UNITS_MS:
      raise ValueError(f"--session_time_unit must be one of {', '.join(TIME_UNITS_MS)}")
    if self.train_examples_divisor < 1:
      raise ValueError("--train_examples_divisor must be >= 1")

  def columns(self) -> Dict[str, str]:
    """The columns read, by role: `key` (session or user), `item`, `time`, `offset` ("" if none)."""
    return {"key": self.session_column or self.user_column, "item": self.item_column,
            "time": self.time_column, "offset": self.time_offset_column}


@dataclasses.dataclass(frozen=True)
class Preset:
  """A published protocol as importer options.

  Attributes:
    protocol: the protocol in words (recorded in stats.json).
    exact: how the output compares with the `data.protocols` function of the same name, and
      under which condition on the raw file.
    options: `EventsConfig` fields (flags given on the command line override them).
  """
  protocol: str
  exact: str
  options: Dict[str, object]


_LESSR_USER_FILTERS = dict(drop_missing=True, remove_repeats=True,
                           max_session_length=protocols.MAX_SESSION_LENGTH,
                           filter_until_stable=True, test_fraction=protocols.LESSR_TEST_FRACTION,
                           time_format="iso8601")
_DIGINETICA = dict(file_format="csv", delimiter=";", session_column="sessionId",
                   item_column="itemId", time_column="eventdate", time_format="date",
                   time_offset_column="timeframe", id_type="integer",
                   test_days=protocols.DIGINETICA_TEST_DAYS)
# SR-GNN dates a session by its last row in the file, to the unit of its date column, and drops
# the sessions dated exactly at the split.
_SRGNN_SPLIT = dict(session_time="last_row", drop_sessions_at_split=True)
_YOOCHOOSE = dict(file_format="csv", column_names=("session_id", "timestamp", "item_id",
                                                   "category"),
                  session_column="session_id", item_column="item_id", time_column="timestamp",
                  id_type="integer", session_time_unit="s",
                  test_days=protocols.YOOCHOOSE_TEST_DAYS, **_SRGNN_SPLIT)
_SAME_ON_SORTED = ("the same sessions in the same order as data.protocols.{} when each session's "
                   "rows are in time order in the file")

PRESETS: Dict[str, Preset] = {
    "gowalla": Preset(
        "LESSR (Atten-Mixer's Gowalla)", "the same sessions in the same order as "
        "data.protocols.preprocess_gowalla",
        dict(file_format="tsv", column_names=("user", "time", "latitude", "longitude",
                                              "location"),
             user_column="user", item_column="location", time_column="time", id_type="integer",
             session_gap_seconds=float(protocols.GOWALLA_INTERVAL_SECONDS),
             top_items=protocols.GOWALLA_TOP_ITEMS, **_LESSR_USER_FILTERS)),
    "lastfm": Preset(
        "LESSR (Atten-Mixer's Last.fm)", "the same sessions in the same order as "
        "data.protocols.preprocess_lastfm",
        dict(file_format="tsv", column_names=("user", "time", "artist_id", "artist_name",
                                              "track_id", "track_name"),
             user_column="user", item_column="artist_id", time_column="time", id_type="string",
             session_gap_seconds=float(protocols.LASTFM_INTERVAL_SECONDS),
             top_items=protocols.LASTFM_TOP_ITEMS, **_LESSR_USER_FILTERS)),
    "diginetica": Preset(
        "LESSR (Atten-Mixer's Diginetica)", "the same sessions in the same order as "
        "data.protocols.preprocess_diginetica_lessr when the file lists sessions in increasing "
        "sessionId (LESSR breaks ties in end time by sessionId, the importer by first row)",
        dict(max_session_length=protocols.MAX_SESSION_LENGTH, **_DIGINETICA)),
    "diginetica_srgnn": Preset(
        "SR-GNN Diginetica", "the same sessions in the same order as "
        "data.protocols.preprocess_diginetica_srgnn when each session has one eventdate and "
        "timeframes under a day (SR-GNN orders a session by timeframe alone)",
        dict(session_time_unit="day", **_DIGINETICA, **_SRGNN_SPLIT)),
    "yoochoose1_64": Preset("SR-GNN Yoochoose 1/64",
                            _SAME_ON_SORTED.format("preprocess_yoochoose(fraction=64)"),
                            dict(train_examples_divisor=64, **_YOOCHOOSE)),
    "yoochoose1_4": Preset("SR-GNN Yoochoose 1/4",
                           _SAME_ON_SORTED.format("preprocess_yoochoose(fraction=4)"),
                           dict(train_examples_divisor=4, **_YOOCHOOSE)),
}


@dataclasses.dataclass(frozen=True)
class ImportResources:
  """How the import runs; none of it changes the result.

  Attributes:
    chunk_bytes: bytes of the log read at a time (CSV/TSV block; Parquet batches of about as
      many bytes). pyarrow's CSV reader reads up to 32 blocks ahead.
    memory_bytes: the budget that sets the sizes of partitions and buckets.
    temp_dir: where the temporary files go (a folder is made inside and removed at the end);
      default: the output folder's parent.
  """
  chunk_bytes: int = 2 << 20
  memory_bytes: int = 1 << 30
  temp_dir: Optional[str] = None


def from_preset(name: str, path: str, **overrides) -> EventsConfig:
  """The preset `name`'s options for the log `path`, with `overrides` (field: value) on top.

  Raises:
    ValueError: an unknown preset or an invalid combination.
  """
  if name not in PRESETS:
    raise ValueError(f"--events_preset must be one of {', '.join(sorted(PRESETS))}, not {name!r}")
  return EventsConfig(**{**PRESETS[name].options, "path": path, "preset": name, **overrides})
