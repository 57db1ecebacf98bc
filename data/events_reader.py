"""Reads an event log in chunks of rows: CSV or TSV (plain or gzip, recognised by its magic bytes)
with pyarrow's streaming CSV reader, Parquet batch by batch. Memory holds one chunk.

Each chunk gives, per event, its row, its session (or user) id, its item as a code and its time
in milliseconds since 1970 UTC (`Chunk`). Every value is checked; a bad one raises
`EventLogError` naming the file, the row (1-based data row, and for CSV/TSV the line: the file's
lines are its rows, an empty line or a quoted line break is an error) and the column:
- a column that is not in the file (the message lists the file's columns);
- a missing or empty id or time, unless `drop_missing` skips the row (CSV/TSV: empty, or one of
  pandas' missing-value markers, `data.raw_formats.PANDAS_MISSING`; Parquet: null);
- ids: integers or strings (`id_type`); with `auto` the first id of a column decides, and an id of
  the other kind is an error ("mixed id types"); an integer id beyond int64, a float column;
- times that do not parse in `time_format`;
- a row with another number of fields (skipped with `drop_missing` when it has fewer), invalid
  UTF-8, corrupt or truncated gzip data.

Integer ids are read as int64 (so `007` and `7` are one id, written `7`); string ids as written.

`plan_parts` splits a log into `FilePart`s that readers read at the same time (the Beam
pipeline, `data.events_beam`): Parquet row groups, or whole lines of a plain CSV/TSV file.
"""

import dataclasses
import zlib
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq

from data import raw_formats
from data.errors import EventLogError
from data.events_config import MS_PER_DAY, EventsConfig
from data.vocabulary import PADDING_TOKEN

Ids = Union[np.ndarray, pa.Array]  # int64 ids, or a string array
_GZIP_MAGIC = b"\x1f\x8b"
_INTEGER = r"^-?[0-9]+$"
_NUMBER = r"^-?[0-9]+(\.[0-9]*)?$"
_ZONE = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$"
_MAX_DIGITS = 18  # fits int64 whatever the digits
GZIP_RATIO_GUESS = 5  # uncompressed / compressed bytes of a text log, to estimate its rows


@dataclasses.dataclass(frozen=True)
class Chunk:
  """Events of consecutive rows, all arrays `[n]`.

  Attributes:
    rows: 0-based index of each event's data row in the file (rows skipped leave gaps).
    keys: session or user ids: int64, or a pyarrow string array.
    items: item codes of the reader's `Catalogue` (int32).
    times: milliseconds since 1970 UTC (int64).
  """
  rows: np.ndarray
  keys: Ids
  items: np.ndarray
  times: np.ndarray


class Catalogue:
  """Item ids <-> codes 0, 1, ... in order of first appearance."""

  def __init__(self):
    self._codes = {}
    self._ids: List = []

  def __len__(self) -> int:
    return len(self._ids)

  def encode(self, ids: Ids) -> np.ndarray:
    """int32 `[n]` codes of `ids` (int64 or strings), new ids getting the next codes."""
    if isinstance(ids, np.ndarray):
      unique, inverse = np.unique(ids, return_inverse=True)
      keys = unique.tolist()
    else:
      encoded = pc.dictionary_encode(ids)
      keys, inverse = encoded.dictionary.to_pylist(), encoded.indices.to_numpy()
    codes, known = np.empty(len(keys), np.int32), self._codes
    for position, key in enumerate(keys):
      code = known.get(key)
      if code is None:
        code = known[key] = len(self._ids)
        self._ids.append(key)
      codes[position] = code
    return codes[inverse]

  def raw_ids(self, codes: np.ndarray) -> List[str]:
    """The ids of `codes`, as strings (integer ids in decimal)."""
    return [str(self._ids[code]) for code in codes.tolist()]


def partition_of(keys: Ids, num_partitions: int, salt: int = 0) -> np.ndarray:
  """int64 `[n]` partition 0..num_partitions-1 of each id, the same for equal ids in any chunk;
  another `salt` spreads the ids of one partition over other partitions."""
  if isinstance(keys, np.ndarray):
    mixed = (keys.astype(np.uint64) ^ np.uint64(salt * 0xD6E8FEB86659FD93 % (1 << 64))) * \
        np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(33)) % np.uint64(num_partitions)).astype(np.int64)
  encoded = pc.dictionary_encode(keys)
  dictionary = encoded.dictionary.cast(pa.binary()).to_pylist()
  hashes = np.fromiter((zlib.crc32(key, salt) for key in dictionary), np.int64, len(dictionary))
  return (hashes % num_partitions)[encoded.indices.to_numpy()]


def open_input(path: str) -> pa.NativeFile:
  """The file `path` for random-access reading: a local path, or a URI of a file system pyarrow
  reaches (`gs://`, `s3://`, `hdfs://`), as the Beam pipeline's workers read a log."""
  if "://" not in path:
    return pa.OSFile(path, "rb")
  file_system, inner = pa_fs.FileSystem.from_uri(path)
  return file_system.open_input_file(inner)


class _Locator:
  """Maps an index of the current chunk to its row and line, for error messages.

  Attributes:
    rows: 0-based data row of each event of the chunk `[n]`.
    lines: 1-based line of each event `[n]` (CSV/TSV), or None (Parquet).
  """

  def __init__(self, path: str, rows: np.ndarray, lines: Optional[np.ndarray]):
    self.path, self.rows, self.lines = path, rows, lines

  def error(self, index: Optional[int], column: Optional[str], reason: str) -> EventLogError:
    if index is None:
      return EventLogError(self.path, reason, column)
    line = None if self.lines is None else int(self.lines[index])
    return EventLogError(self.path, reason, column, row=int(self.rows[index]) + 1, line=line)


def _first(mask: pa.Array) -> Optional[int]:
  """The index of the first true value of a boolean array, or None."""
  found = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
  return int(found[0]) if len(found) else None


def _failing_index(array: pa.Array, convert: Callable[[pa.Array], pa.Array]) -> int:
  """The index of the first value `convert` fails on (bisection: the whole `array` fails)."""
  low, high = 0, len(array)
  while high - low > 1:
    middle = (low + high) // 2
    try:
      convert(array.slice(low, middle - low))
      low = middle
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
      high = middle
  return low


def _text(array: pa.Array, index: int) -> str:
  return repr(str(array[index].as_py())[:60])


class _IdColumn:
  """Parses one id column chunk by chunk, keeping the id kind the column started with."""

  def __init__(self, name: str, id_type: str, in_vocabulary: bool = False):
    self.name, self.id_type, self.in_vocabulary = name, id_type, in_vocabulary
    self.kind = None if id_type == "auto" else id_type
    self.first = None  # (row, text) of the first id, for the mixed-types message

  def parse(self, array: pa.Array, where: _Locator) -> Ids:
    if pa.types.is_dictionary(array.type):
      array = array.dictionary_decode()
    if pa.types.is_integer(array.type):
      if self.id_type == "string":
        return pc.cast(array, pa.string())
      self.kind = self.kind or "integer"
      if self.kind == "string":
        raise where.error(0, self.name, "mixed id types: this Parquet batch holds integer ids, "
                          "earlier rows strings; pass --id_type=string")
      return array.to_numpy(zero_copy_only=False).astype(np.int64)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
      raise where.error(None, self.name, f"ids must be integers or strings, not {array.type}")
    empty = _first(pc.equal(pc.utf8_length(array), 0))
    if empty is not None:
      raise where.error(empty, self.name, "empty id (pass --drop_missing to skip such rows)")
    if self.in_vocabulary:  # vocab.txt holds one id a line, line 0 the padding token
      bad = _first(pc.or_(pc.match_substring_regex(array, r"[\r\n]"),
                          pc.equal(array, PADDING_TOKEN)))
      if bad is not None:
        raise where.error(bad, self.name, f"item id {_text(array, bad)} cannot be in the "
                          f"vocabulary (a line break, or the padding token {PADDING_TOKEN})")
    if self.id_type == "string":
      return array
    is_integer = pc.match_substring_regex(array, _INTEGER)
    if self.kind is None:
      self.kind = "integer" if is_integer[0].as_py() else "string"
      self.first = (int(where.rows[0]) + 1, _text(array, 0))
    if self.kind == "string":
      mixed = _first(is_integer)
      if mixed is not None:
        raise where.error(mixed, self.name, self._mixed(array, mixed, "an integer", "is not"))
      return array
    bad = _first(pc.invert(is_integer))
    if bad is not None:
      if self.id_type == "integer":
        raise where.error(bad, self.name, f"id {_text(array, bad)} is not an integer")
      raise where.error(bad, self.name, self._mixed(array, bad, "not an integer", "is"))
    long = _first(pc.greater(pc.utf8_length(pc.utf8_ltrim(array, "-0")), _MAX_DIGITS))
    if long is not None:
      try:
        return pc.cast(array, pa.int64()).to_numpy()
      except pa.ArrowInvalid:
        bad = _failing_index(array, lambda part: pc.cast(part, pa.int64()))
        raise where.error(bad, self.name, f"id {_text(array, bad)} is beyond int64; pass "
                          "--id_type=string to keep such ids as strings") from None
    return pc.cast(array, pa.int64()).to_numpy()

  def _mixed(self, array: pa.Array, index: int, kind: str, first_is: str) -> str:
    row, text = self.first
    return (f"mixed id types: id {_text(array, index)} is {kind}, but the column's first id "
            f"{text} (row {row:,}) {first_is}; pass --id_type=string to read every id as "
            "written")


def _iso_to_ms(array: pa.Array) -> pa.Array:
  """ISO 8601 strings -> int64 ms; with a zone (Z, +01:00) converted to UTC, without read as UTC."""
  zoned = pc.match_substring_regex(array, _ZONE)
  if pc.all(zoned).as_py():
    return pc.cast(pc.cast(array, pa.timestamp("ms", "UTC")), pa.int64())
  if not pc.any(zoned).as_py():
    return pc.cast(pc.cast(array, pa.timestamp("ms")), pa.int64())
  zoned = zoned.to_numpy(zero_copy_only=False)
  result = np.empty(len(array), np.int64)
  result[zoned] = _iso_to_ms(array.filter(pa.array(zoned))).to_numpy()
  result[~zoned] = _iso_to_ms(array.filter(pa.array(~zoned))).to_numpy()
  return pa.array(result)


def _numbers_to_ms(array: pa.Array, scale: int) -> pa.Array:
  """Decimal strings or numbers of seconds (scale 1000) or milliseconds (1) -> int64 ms."""
  if pa.types.is_integer(array.type):
    return pc.multiply(pc.cast(array, pa.int64()), scale)
  values = pc.cast(array, pa.float64())
  if not pc.all(pc.is_finite(values)).as_py():
    raise pa.ArrowInvalid("not a finite number")
  return pc.cast(pc.floor(pc.multiply(values, float(scale))), pa.int64())


def _times(array: pa.Array, time_format: str, name: str, where: _Locator) -> np.ndarray:
  """int64 `[n]` milliseconds since 1970 UTC of a time column chunk."""
  kind = array.type
  if pa.types.is_timestamp(kind):
    return pc.cast(pc.cast(array, pa.timestamp("ms", kind.tz), safe=False), pa.int64()).to_numpy()
  if pa.types.is_date32(kind):
    return pc.cast(array, pa.int32()).to_numpy().astype(np.int64) * MS_PER_DAY
  if pa.types.is_date64(kind):
    return pc.cast(array, pa.int64()).to_numpy()
  numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
  if numeric and time_format not in ("seconds", "milliseconds"):
    raise where.error(None, name, f"the column holds numbers ({kind}): pass "
                      "--time_format=seconds or milliseconds")
  if not numeric and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
    raise where.error(None, name, f"times must be strings, numbers, timestamps or dates, not "
                      f"{kind}")
  if time_format in ("seconds", "milliseconds"):
    scale = 1000 if time_format == "seconds" else 1
    if not numeric:
      bad = _first(pc.invert(pc.match_substring_regex(array, _NUMBER)))
      if bad is not None:
        raise where.error(bad, name, f"time {_text(array, bad)} is not a number of "
                          f"{time_format}")
    convert = lambda part: _numbers_to_ms(part, scale)  # noqa: E731
  elif time_format == "iso8601":
    convert = _iso_to_ms
  else:
    pattern = "%Y-%m-%d" if time_format == "date" else time_format

    def convert(part):
      parsed = pc.strptime(part, format=pattern, unit="ms", error_is_null=True)
      if parsed.null_count:
        raise pa.ArrowInvalid("unparsable")
      return pc.cast(parsed, pa.int64())
  try:
    return convert(array).to_numpy()
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    bad = _failing_index(array, convert)
    example = {"iso8601": "2021-03-04T05:06:07Z", "date": "2021-03-04",
               "seconds": "1614834367", "milliseconds": "1614834367000"}.get(time_format)
    raise where.error(bad, name, f"time {_text(array, bad)} does not parse as {time_format}" +
                      (f" (e.g. {example})" if example else "") + "; see --time_format") from None


def _offsets(array: pa.Array, name: str, where: _Locator) -> np.ndarray:
  """int64 `[n]` milliseconds of an offset column (integers)."""
  if pa.types.is_integer(array.type):
    return array.to_numpy(zero_copy_only=False).astype(np.int64)
  bad = _first(pc.invert(pc.match_substring_regex(array, _INTEGER)))
  if bad is not None:
    raise where.error(bad, name, f"offset {_text(array, bad)} is not an integer of milliseconds")
  return pc.cast(array, pa.int64()).to_numpy()


@dataclasses.dataclass(frozen=True)
class FilePart:
  """A part of a log that a reader reads alone (`plan_parts`).

  Attributes:
    start, stop: for CSV/TSV (not gzip), the bytes of whole lines `[start, stop)`; for Parquet,
      the row groups `[start, stop)`.
    names: for a CSV/TSV part after the first, the file's column names (its header line, or
      `column_names`).
  """
  start: int
  stop: int
  names: Tuple[str, ...] = ()


def plan_parts(config: EventsConfig, part_bytes: int) -> List[Optional[FilePart]]:
  """The log split into parts of about `part_bytes` that readers read at the same time: Parquet
  by row groups, plain CSV/TSV at line starts. A gzip file (a stream that cannot be split), a
  small file, or one that cannot be opened or read is one part, None: the whole file."""
  try:
    with open_input(config.path) as source:
      size = source.size()
      if config.file_format == "parquet":
        metadata = pq.ParquetFile(source).metadata
        parts, start, gathered = [], 0, 0
        for group in range(metadata.num_row_groups):
          gathered += metadata.row_group(group).total_byte_size
          if gathered >= part_bytes or group == metadata.num_row_groups - 1:
            parts.append(FilePart(start, group + 1))
            start, gathered = group + 1, 0
        return parts if len(parts) > 1 else [None]
      if source.read(2) == _GZIP_MAGIC or size <= part_bytes:
        return [None]
      names = tuple(config.column_names) or _header(source, config.delimiter)
      starts = [0]
      for guess in range(part_bytes, size, part_bytes):
        source.seek(max(guess - 1, starts[-1]))
        while True:  # the next line's start
          block = source.read(1 << 16)
          if not block:
            break
          newline = block.find(b"\n")
          if newline >= 0:
            starts.append(source.tell() - len(block) + newline + 1)
            break
        if starts[-1] >= size:
          starts.pop()
          break
      starts = sorted(set(starts))
      return [FilePart(start, stop, names if start else ())
              for start, stop in zip(starts, starts[1:] + [size])]
  except (OSError, pa.ArrowException):
    return [None]


def _header(source: pa.NativeFile, delimiter: str) -> Tuple[str, ...]:
  """The column names of a CSV/TSV file's header line."""
  source.seek(0)
  first = b""
  while b"\n" not in first:
    block = source.read(1 << 16)
    if not block:
      break
    first += block
  line = first.split(b"\n", 1)[0] + b"\n"
  return tuple(pa_csv.open_csv(pa.BufferReader(line), parse_options=pa_csv.ParseOptions(
      delimiter=delimiter)).schema.names)


class EventReader:
  """Iterates over an event log's `Chunk`s (see the module docstring), or over a `FilePart`'s:
  then its rows are numbered from the part's first data row (0), and its errors are the first
  of the part (not necessarily those of the whole file).

  Attributes:
    catalogue: the item codes of the chunks read so far.
    rows_read: data rows read so far (skipped rows included).
    rows_skipped: rows skipped by `drop_missing`.
    size: the file's size in bytes; `position()` is how far the reading is, in the same unit.
  """

  def __init__(self, config: EventsConfig, chunk_bytes: int, part: Optional[FilePart] = None):
    self.config, self.part = config, part
    self.chunk_bytes = max(int(chunk_bytes), 1 << 10)
    self.catalogue = Catalogue()
    self.rows_read = 0
    self.rows_skipped = 0
    self._columns = {role: name for role, name in config.columns().items() if name}
    self._ids = {"key": _IdColumn(self._columns["key"], config.id_type),
                 "item": _IdColumn(self._columns["item"], config.id_type, in_vocabulary=True)}
    self._file = None
    self._parquet_rows = 0
    self._gzip = False
    try:
      self._file = open_input(config.path)
    except (FileNotFoundError, IsADirectoryError, PermissionError, OSError,
            pa.ArrowException) as error:
      raise EventLogError(config.path, f"cannot open the file ({error})") from None
    self.size = max(self._file.size(), 1)

  def close(self) -> None:
    if self._file is not None:
      self._file.close()

  def id_kinds(self) -> Tuple[Optional[str], Optional[str]]:
    """The kinds (integer, string) of the session (user) and item ids read; None before any."""
    return self._ids["key"].kind, self._ids["item"].kind

  def estimated_rows(self) -> int:
    """The log's number of rows, estimated after the first chunk (exact for Parquet; for text,
    from the first block's rows, and for gzip a typical compression ratio)."""
    if self.config.file_format == "parquet":
      return self._parquet_rows
    text_bytes = self.size * (GZIP_RATIO_GUESS if self._gzip else 1)
    return max(self.rows_read, int(text_bytes * self.rows_read / self.chunk_bytes))

  def position(self) -> int:
    """Bytes of the file consumed so far (for Parquet: the share of rows read, in bytes)."""
    if self.config.file_format == "parquet":
      return int(self.size * self.rows_read / max(self._parquet_rows, 1))
    return self._file.tell()

  def __iter__(self) -> Iterator[Chunk]:
    batches = self._parquet() if self.config.file_format == "parquet" else self._text()
    for batch, rows, lines in batches:
      chunk = self._chunk(batch, rows, lines)
      if chunk is not None:
        yield chunk

  def _needed(self) -> List[str]:
    return list(dict.fromkeys(self._columns.values()))

  def _missing_column(self, names: List[str]) -> EventLogError:
    missing = [name for name in self._needed() if name not in names][0]
    hint = ("" if self.config.column_names or self.config.file_format == "parquet" else
            "; a file without a header line needs --column_names")
    return EventLogError(self.config.path, f"no such column; the file's columns are "
                         f"{', '.join(map(repr, names))}{hint}", column=missing)

  def _parquet(self) -> Iterator[Tuple[pa.RecordBatch, np.ndarray, None]]:
    try:
      parquet = pq.ParquetFile(self._file)
    except (pa.ArrowInvalid, OSError) as error:
      raise EventLogError(self.config.path, f"not a Parquet file ({error})") from None
    names = parquet.schema_arrow.names
    if any(name not in names for name in self._needed()):
      raise self._missing_column(names)
    metadata = parquet.metadata
    self._parquet_rows = metadata.num_rows
    row_bytes = sum(metadata.row_group(g).total_byte_size
                    for g in range(metadata.num_row_groups)) / max(metadata.num_rows, 1)
    batch_rows = max(1, int(self.chunk_bytes / max(row_bytes, 1)))
    try:
      groups = None if self.part is None else range(self.part.start, self.part.stop)
      for batch in parquet.iter_batches(batch_size=batch_rows, columns=self._needed(),
                                        row_groups=groups):
        rows = np.arange(self.rows_read, self.rows_read + batch.num_rows, dtype=np.int64)
        self.rows_read += batch.num_rows
        yield batch, rows, None
    except (pa.ArrowInvalid, OSError) as error:
      raise EventLogError(self.config.path, f"cannot read the Parquet data after row "
                          f"{self.rows_read:,} ({error})") from None

  def _text(self) -> Iterator[Tuple[pa.RecordBatch, np.ndarray, np.ndarray]]:
    config, path = self.config, self.config.path
    magic = self._file.read(2)
    self._file.seek(0)
    self._gzip = magic == _GZIP_MAGIC
    stream = (pa.CompressedInputStream(self._file, "gzip") if magic == _GZIP_MAGIC
              else self._file)
    names = list(config.column_names) or None
    if self.part is not None:
      self._file.seek(self.part.start)
      stream = pa.BufferReader(self._file.read(self.part.stop - self.part.start))
      names = list(self.part.names) or names
    skipped_lines, invalid = [], []

    def on_invalid_row(row) -> str:
      if config.drop_missing and row.actual_columns < row.expected_columns:
        skipped_lines.append(row.number)
        return "skip"
      invalid.append(row)
      return "error"

    header = 0 if names else 1
    read = pa_csv.ReadOptions(block_size=self.chunk_bytes, use_threads=False,
                              column_names=names)
    parse = pa_csv.ParseOptions(delimiter=config.delimiter, newlines_in_values=False,
                                ignore_empty_lines=False, invalid_row_handler=on_invalid_row)
    missing = sorted(raw_formats.PANDAS_MISSING) if config.drop_missing else []
    convert = pa_csv.ConvertOptions(
        include_columns=self._needed(), column_types={name: pa.string() for name in self._needed()},
        null_values=missing, strings_can_be_null=config.drop_missing,
        quoted_strings_can_be_null=config.drop_missing)
    last_line = header
    try:
      try:
        reader = pa_csv.open_csv(stream, read_options=read, parse_options=parse,
                                 convert_options=convert)
      except KeyError:
        with open_input(path) as again:
          stream = pa.CompressedInputStream(again, "gzip") if self._gzip else again
          names = pa_csv.open_csv(stream, read_options=read, parse_options=parse).schema.names
        raise self._missing_column(names) from None
      for batch in reader:
        lines = np.arange(last_line + 1, last_line + 1 + batch.num_rows + len(skipped_lines))
        if skipped_lines:
          lines = np.setdiff1d(lines, skipped_lines)[:batch.num_rows]
          self.rows_skipped += len(skipped_lines)
          last_line = max(last_line, max(skipped_lines))
          skipped_lines.clear()
        if len(lines):
          last_line = max(last_line, int(lines[-1]))
        self.rows_read = last_line - header
        yield batch, lines - header - 1, lines
    except pa.ArrowInvalid as error:
      if invalid:
        row = invalid[0]
        raise EventLogError(path, f"expected {row.expected_columns} fields, found "
                            f"{row.actual_columns}: {row.text[:80]!r}", line=row.number) from None
      raise EventLogError(path, f"cannot read the rows after line {last_line:,} ({error})",
                          line=last_line + 1) from None
    except OSError as error:  # zlib errors of corrupt or truncated gzip data
      raise EventLogError(path, f"corrupt or truncated gzip data after line {last_line:,} "
                          f"({error})", line=last_line + 1) from None

  def _chunk(self, batch: pa.RecordBatch, rows: np.ndarray,
             lines: Optional[np.ndarray]) -> Optional[Chunk]:
    """Parses and checks one batch of `rows` (0-based data rows, `[n]`) on `lines` (CSV/TSV);
    None if every row was skipped."""
    if not batch.num_rows:
      return None
    columns = {role: batch.column(name) for role, name in self._columns.items()}
    nulls = None
    for array in columns.values():
      if array.null_count:
        nulls = array.is_null() if nulls is None else pc.or_(nulls, array.is_null())
    if nulls is not None:
      if not self.config.drop_missing:
        where = _Locator(self.config.path, rows, lines)
        for role, array in columns.items():
          index = _first(array.is_null())
          if index is not None:
            raise where.error(index, self._columns[role], "missing value (pass --drop_missing to "
                              "skip such rows)")
      keep = pc.invert(nulls)
      selected = keep.to_numpy(zero_copy_only=False)
      self.rows_skipped += int(len(selected) - selected.sum())
      columns = {role: array.filter(keep) for role, array in columns.items()}
      rows = rows[selected]
      lines = None if lines is None else lines[selected]
      if not len(rows):
        return None
    where = _Locator(self.config.path, rows, lines)
    keys = self._ids["key"].parse(columns["key"], where)
    items = self.catalogue.encode(self._ids["item"].parse(columns["item"], where))
    times = _times(columns["time"], self.config.time_format, self._columns["time"], where)
    if "offset" in columns:
      times = times + _offsets(columns["offset"], self._columns["offset"], where)
    return Chunk(rows, keys, items, times)
