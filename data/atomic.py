"""Atomic file and directory output: write under a temporary name, then rename into place.

A reader (or a crashed writer's successor) therefore sees either the complete old output or the
complete new output, never a half-written file.
"""

import contextlib
import os
import shutil
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; renames it to `path` if the block succeeds."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
  os.close(handle)
  try:
    yield temporary
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields a temporary directory beside `path`; moves it to `path` if the block succeeds.

  An existing `path` is replaced only after the new directory is complete.
  """
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
  try:
    yield temporary
    if os.path.exists(path):
      retired = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.old-")
      os.rename(path, os.path.join(retired, "old"))
      os.rename(temporary, path)
      shutil.rmtree(retired, ignore_errors=True)
    else:
      os.rename(temporary, path)
  finally:
    if os.path.exists(temporary):
      shutil.rmtree(temporary, ignore_errors=True)
