"""The error raised for malformed input data: it always names the file and, where known, the line."""

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
