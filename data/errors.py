"""The errors of the data sources: malformed input data, a dataset with no source at all, and a
failed download.

`DataFormatError` always names the file and, where known, the line; `DatasetNotFoundError` says
what to provide (which file, from where, into which folder); `DownloadError` names the address,
the destination and what went wrong.
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
