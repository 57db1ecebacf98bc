"""Parsers of the raw dataset files: each yields one plain tuple per event, streaming.

Formats (all may be gzip-compressed; gzip is recognised by its magic bytes, whatever the name):
- `read_gowalla`: SNAP `loc-gowalla_totalCheckins.txt`, tab-separated user, check-in time,
  latitude, longitude, location id; yields `(user: int, seconds: int, location: int)`.
- `read_lastfm`: Last.fm-1K `userid-timestamp-artid-artname-traid-traname.tsv`, tab-separated;
  yields `(user: str, seconds: int, artist_id: str)` (ids such as `user_000001` and MBIDs).
- `read_diginetica`: CIKM Cup 2016 `train-item-views.csv`, `;`-separated with a header line
  `sessionId;userId;itemId;timeframe;eventdate`; yields `(session, item, timeframe_ms, day)`, ints.
- `read_yoochoose`: RecSys Challenge 2015 `yoochoose-clicks.dat`, `,`-separated session id, time,
  item id, category, no header; yields `(session: int, seconds: int, item: int)`.

`seconds` are UTC seconds since 1970 (Yoochoose's milliseconds are cut off, as SR-GNN's
`curdate[:19]` did); `day` is days since 1970-01-01.

Tokenisation is CSV's (quote character `"`, doubled quotes inside quotes), as in the original
scripts (LESSR read with pandas' `read_csv`, SR-GNN with Python's `csv`): a field that starts with
`"` runs to the closing quote, even across lines. Every line must be valid UTF-8 (pandas' default).

Rows are handled as the original scripts handled them:
- Gowalla and Last.fm (LESSR): a row whose used column is absent or empty or one of pandas' default
  missing-value markers (`NA`, `NaN`, `null`, ...) is skipped, as LESSR's `dropna()` did; extra
  columns are ignored (pandas with `usecols`).
- Diginetica and Yoochoose (SR-GNN / LESSR): every row must have all columns (5 and 4); `userId` and
  `category` are not read (they are often empty).

Anything else malformed raises `DataFormatError` naming the file and the (1-based) line where the
record starts: an empty line, a line longer than `MAX_LINE_BYTES`, invalid UTF-8, ids that are not
non-negative decimal integers below 2**63, bad timestamps or dates, a Diginetica timeframe over
`MAX_TIMEFRAME_MS`, a wrong header, a quoted field left open at the end of the file, and corrupt or
truncated gzip data (the line is then the first one that could not be read). A missing or unreadable
file raises it with line None. The readers are generators: errors surface while iterating.
"""

import csv
import datetime
import gzip
import os
import re
import zlib
from typing import Callable, Iterator, List, Sequence, Tuple

from absl import logging

from data.errors import DataFormatError

# No real line comes near this; it bounds the memory a corrupt file (no line breaks) can take.
MAX_LINE_BYTES = 1 << 20
MAX_ID = (1 << 63) - 1  # ids are stored in int64 arrays downstream
# A Diginetica timeframe (ms since the session's first event) beyond ~31 years is corrupt; the bound
# keeps eventdate + timeframe in int64 milliseconds (pandas, in LESSR, fails near 292 years).
MAX_TIMEFRAME_MS = 10**12

# pandas' default missing-value markers (`read_csv` without `na_values`): LESSR's `dropna()` drops
# rows holding them.
PANDAS_MISSING = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"})

DIGINETICA_COLUMNS = ("sessionid", "userid", "itemid", "timeframe", "eventdate")
YOOCHOOSE_COLUMNS = ("sessionid", "timestamp", "itemid", "category")

_GZIP_MAGIC = b"\x1f\x8b"
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
# ISO 8601 UTC times: SNAP and Last.fm write `2010-10-19T23:55:27Z`, Yoochoose adds milliseconds.
_TIME = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?Z")
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()

Record = Tuple[int, List[str]]  # (line number where the record starts, fields)


def _open_binary(path: str):
  """Opens `path` for binary reading, decompressing gzip data (recognised by its magic bytes)."""
  raw = open(path, "rb")  # pylint: disable=consider-using-with
  if raw.read(2) == _GZIP_MAGIC:
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw, mode="rb"), raw
  raw.seek(0)
  return raw, raw


def iter_records(path: str, delimiter: str) -> Iterator[Record]:
  """Yields `(line_number, fields)` for each record of a delimiter-separated text file.

  Args:
    path: the file, plain or gzip-compressed.
    delimiter: the one-character field separator.

  Raises:
    DataFormatError: see the module docstring.
  """
  if not os.path.isfile(path):
    raise DataFormatError(path, None, "file not found")
  lines_read = 0

  def decoded_lines(binary) -> Iterator[str]:
    nonlocal lines_read
    while True:
      raw = binary.readline(MAX_LINE_BYTES + 1)
      if not raw:
        return
      lines_read += 1
      if len(raw) > MAX_LINE_BYTES:
        raise DataFormatError(path, lines_read, f"line longer than {MAX_LINE_BYTES} bytes")
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError as error:
        raise DataFormatError(path, lines_read,
                              f"not valid UTF-8 (byte {error.start + 1} of the line)") from None
      if lines_read == 1 and text.startswith("\ufeff"):
        text = text[1:]  # byte-order mark
      yield text

  try:
    binary, raw_file = _open_binary(path)
  except OSError as error:
    raise DataFormatError(path, None, f"cannot read the file ({error.strerror})") from None
  try:
    reader = csv.reader(decoded_lines(binary), delimiter=delimiter, quotechar='"')
    while True:
      start = lines_read + 1
      try:
        fields = next(reader)
      except StopIteration:
        return
      except csv.Error as error:
        raise DataFormatError(path, start, f"cannot split the line into fields: {error}") from None
      if not fields or (len(fields) == 1 and not fields[0].strip()):
        raise DataFormatError(path, start, "empty line")
      if fields[-1].endswith(("\n", "\r")):
        raise DataFormatError(path, start, "a field opened with a double quote is never closed")
      if lines_read > start:
        logging.log_first_n(logging.WARNING, "%s:%d-%d: one record (a quoted field spans lines)",
                            5, path, start, lines_read)
      yield start, fields
  except (EOFError, gzip.BadGzipFile, zlib.error) as error:
    raise DataFormatError(path, lines_read + 1,
                          f"corrupt or truncated gzip data ({error})") from None
  finally:
    binary.close()
    raw_file.close()


def parse_id(text: str, what: str, path: str, line: int) -> int:
  """A non-negative decimal integer id below 2**63; raises `DataFormatError` otherwise."""
  if text.isascii() and text.isdigit():  # ASCII digits only: no sign, space, '_' or other scripts
    value = int(text)
    if value > MAX_ID:
      raise DataFormatError(path, line, f"{what} {text[:40]!r} is too large (over 2**63 - 1)")
    return value
  if text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
    raise DataFormatError(path, line, f"{what} {text[:40]!r} is negative")
  raise DataFormatError(path, line, f"{what} {text[:40]!r} is not an integer")


class _DayParser:
  """`YYYY-MM-DD` -> days since 1970-01-01, with a cache (raw files repeat few dates)."""

  def __init__(self):
    self._days = {}

  def __call__(self, text: str, what: str, path: str, line: int) -> int:
    days = self._days.get(text)
    if days is None:
      match = _DATE.fullmatch(text)
      try:
        if not match:
          raise ValueError("not YYYY-MM-DD")
        days = datetime.date(*map(int, match.groups())).toordinal() - _EPOCH_ORDINAL
      except ValueError as error:
        raise DataFormatError(path, line, f"{what} {text[:40]!r} is not a date "
                              f"YYYY-MM-DD ({error})") from None
      self._days[text] = days
    return days


class _TimeParser:
  """ISO 8601 UTC time `YYYY-MM-DDTHH:MM:SS[.fff]Z` -> whole seconds since 1970 (fraction cut)."""

  def __init__(self, allow_fraction: bool):
    self._allow_fraction = allow_fraction
    self._day = _DayParser()
    self._expected = "YYYY-MM-DDTHH:MM:SS" + ("[.fff]Z" if allow_fraction else "Z")

  def __call__(self, text: str, what: str, path: str, line: int) -> int:
    match = _TIME.fullmatch(text)
    if not match or (match.group(5) and not self._allow_fraction):
      raise DataFormatError(path, line, f"{what} {text[:40]!r} is not an ISO 8601 UTC time "
                            f"{self._expected}")
    date, hour, minute, second, _ = match.groups()
    day = self._day(date, what, path, line)
    hour, minute, second = int(hour), int(minute), int(second)
    if hour > 23 or minute > 59 or second > 59:
      raise DataFormatError(path, line, f"{what} {text[:40]!r} has an invalid time of day")
    return day * 86400 + hour * 3600 + minute * 60 + second


def _read_user_events(path: str, item_column: int, parse_user: Callable, parse_item: Callable,
                      item_name: str) -> Iterator[Tuple]:
  """The LESSR tab-separated files: (user, seconds, item) from columns 0, 1 and `item_column`."""
  parse_time = _TimeParser(allow_fraction=False)
  skipped = 0
  for line, fields in iter_records(path, "\t"):
    if len(fields) <= item_column or any(fields[column] in PANDAS_MISSING
                                         for column in (0, 1, item_column)):
      skipped += 1
      continue
    yield (parse_user(fields[0], "user id", path, line),
           parse_time(fields[1], "time", path, line),
           parse_item(fields[item_column], item_name, path, line))
  if skipped:
    logging.info("%s: skipped %d rows with a missing user, time or %s (LESSR's dropna)", path,
                 skipped, item_name)


def _opaque_id(text: str, *unused_context) -> str:
  """Last.fm ids are strings, kept as they are."""
  return text


def read_gowalla(path: str) -> Iterator[Tuple[int, int, int]]:
  """SNAP Gowalla check-ins: yields `(user, seconds, location)`; see the module docstring."""
  return _read_user_events(path, 4, parse_id, parse_id, "location id")


def read_lastfm(path: str) -> Iterator[Tuple[str, int, str]]:
  """Last.fm-1K listens: yields `(user, seconds, artist_id)`; the ids are strings."""
  return _read_user_events(path, 2, _opaque_id, _opaque_id, "artist id")


def _header_matches(fields: Sequence[str], expected: Sequence[str]) -> bool:
  """`sessionId` and `session_id` are both accepted (SR-GNN users renamed the header)."""
  return [field.strip().lower().replace("_", "") for field in fields] == list(expected)


def _check_columns(fields: Sequence[str], count: int, path: str, line: int, what: str) -> None:
  if len(fields) != count:
    raise DataFormatError(path, line, f"expected {count} fields ({what}), found {len(fields)}")


def read_diginetica(path: str) -> Iterator[Tuple[int, int, int, int]]:
  """CIKM Cup 2016 item views: yields `(session, item, timeframe_ms, day)`.

  The first line must be the header `sessionId;userId;itemId;timeframe;eventdate` (or the same names
  with underscores, `session_id;...`).
  """
  parse_day = _DayParser()
  what = "sessionId;userId;itemId;timeframe;eventdate"
  for line, fields in iter_records(path, ";"):
    if line == 1:
      if not _header_matches(fields, DIGINETICA_COLUMNS):
        raise DataFormatError(path, 1, f"expected the header line {what}")
      continue
    _check_columns(fields, 5, path, line, what)
    timeframe = parse_id(fields[3], "timeframe", path, line)
    if timeframe > MAX_TIMEFRAME_MS:
      raise DataFormatError(path, line, f"timeframe {timeframe} ms is over {MAX_TIMEFRAME_MS}")
    yield (parse_id(fields[0], "sessionId", path, line), parse_id(fields[2], "itemId", path, line),
           timeframe, parse_day(fields[4], "eventdate", path, line))


def read_yoochoose(path: str) -> Iterator[Tuple[int, int, int]]:
  """RecSys Challenge 2015 clicks: yields `(session, seconds, item)`.

  The file has no header; a first line `session_id,timestamp,item_id,category` (which SR-GNN's
  `csv.DictReader` needed) is accepted and skipped.
  """
  parse_time = _TimeParser(allow_fraction=True)
  what = "session id, timestamp, item id, category"
  for line, fields in iter_records(path, ","):
    if line == 1 and _header_matches(fields, YOOCHOOSE_COLUMNS):
      continue
    _check_columns(fields, 4, path, line, what)
    yield (parse_id(fields[0], "session id", path, line),
           parse_time(fields[1], "timestamp", path, line),
           parse_id(fields[2], "item id", path, line))

