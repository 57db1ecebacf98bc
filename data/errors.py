"""The errors of the data sources: malformed input data, a dataset with no source at all, and a
failed download.

`DataFormatError` always names the file and, where known, the line; `EventLogError` (an event-log
import) names the file and, where known, the column and the row, or the filter that left nothing;
`DatasetNotFoundError` says what to provide (which file, from where, into which folder);
`DownloadError` names the address, the destination and what went wrong.
"""

from typing import Optional


class DataFormatError(ValueError):
  """Malformed or unreadable input data.

  Attributes:
    path: the file (or folder) at fault.
    line: 1-based line number, or None when the problem is not tied to a line.
    reason: what is wrong, in words.
  """

  def __init__(self, path: str, line: Optional[int], reason: str):
    self.path = path
    self.line = line
    self.reason = reason
    location = f"{path}:{line}" if line is not None else str(path)
    super().__init__(f"{location}: {reason}")

  def __reduce__(self):
    return type(self), (self.path, self.line, self.reason)


class EventLogError(DataFormatError):
  """Bad input to the event-log importer (`data.events`), or options it cannot apply to the log.

  The message reads `FILE: row R (line L), column 'C': reason`, each part where known.

  Attributes:
    path: the event log.
    line: the 1-based line of a CSV/TSV file (the header is line 1), or None.
    reason: what is wrong, in words (for an empty result: the filter or split that emptied it).
    column: the column at fault, or None.
    row: the 1-based data row (the header not counted), or None.
  """

  def __init__(self, path: str, reason: str, column: Optional[str] = None,
               row: Optional[int] = None, line: Optional[int] = None):
    super().__init__(path, line, reason)
    self.column = column
    self.row = row
    where = []
    if row is not None:
      where.append(f"row {row:,}" + (f" (line {line:,})" if line is not None else ""))
    elif line is not None:
      where.append(f"line {line:,}")
    if column is not None:
      where.append(f"column {column!r}")
    self.args = (f"{path}: " + (", ".join(where) + ": " if where else "") + reason,)

  def __str__(self):
    return self.args[0]

  def __reduce__(self):
    return type(self), (self.path, self.reason, self.column, self.row, self.line)


class DatasetNotFoundError(FileNotFoundError):
  """No source of a dataset's sessions was found; the message says what to provide."""


class DownloadError(OSError):
  """A download that failed, ended early or differs from its checksum; its destination is left
  as it was.

  Attributes:
    url: the address downloaded.
    path: the destination file.
    reason: what went wrong, in words.
  """

  def __init__(self, url: str, path: str, reason: str):
    self.url = url
    self.path = path
    self.reason = reason
    super().__init__(f"downloading {url} to {path} failed: {reason}")

  def __reduce__(self):
    return type(self), (self.url, self.path, self.reason)
