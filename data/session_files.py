"""Reads and writes preprocessed session files: one session per line, item ids separated by spaces.

This is the format of `../shared/data/*/{train,test}_sessions.txt.gz` (see that folder's README):
ids are positive integers in click order. Files may be gzip-compressed (`.gz`). Every problem is
reported as a `DataFormatError` naming the file and the line.
"""

import gzip
import os
import zlib
from typing import Iterator, List

from data.errors import DataFormatError

Session = List[int]


def _open(path: str):
  if path.endswith(".gz"):
    return gzip.open(path, "rb")
  return open(path, "rb")


def parse_session_line(line: bytes, path: str, line_number: int) -> Session:
  """Parses one line of item ids; raises `DataFormatError` naming `path:line_number`."""
  try:
    text = line.decode("ascii")
  except UnicodeDecodeError as error:
    raise DataFormatError(path, line_number,
                          f"not ASCII text (byte {error.start}): expected item ids") from None
  tokens = text.split()
  if not tokens:
    raise DataFormatError(path, line_number, "empty line: a session needs at least one item id")
  session = []
  for token in tokens:
    if not token.isdigit():
      raise DataFormatError(path, line_number,
                            f"item id {token[:40]!r} is not a non-negative integer")
    item = int(token)
    if item == 0:
      raise DataFormatError(path, line_number, "item id 0 is reserved for padding")
    session.append(item)
  return session


def iter_sessions(path: str) -> Iterator[Session]:
  """Yields the sessions of `path` in file order."""
  if not os.path.isfile(path):
    raise DataFormatError(path, None, "file not found")
  line_number = 0
  try:
    with _open(path) as lines:
      for line_number, line in enumerate(lines, start=1):
        yield parse_session_line(line, path, line_number)
  except (EOFError, gzip.BadGzipFile, zlib.error) as error:
    raise DataFormatError(path, line_number + 1,
                          f"corrupt or truncated gzip data ({error})") from None


def read_sessions(path: str) -> List[Session]:
  """Reads all sessions of `path`; see `iter_sessions`."""
  return list(iter_sessions(path))

