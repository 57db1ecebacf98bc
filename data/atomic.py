"""Atomic, durable file and directory output: write under a temporary name, flush it to disk,
then rename it into place.

A reader, or a crashed writer's successor, sees either the complete old output or the complete
new output, never a half-written file, and never a moment where the path is missing: on Linux an
existing directory is swapped with its replacement in one `renameat2(RENAME_EXCHANGE)` call. The
new content is fsynced, with its folder, before the rename, and the parent folder after it, so a
power cut does not leave a renamed but empty file.
"""

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from typing import Iterator

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_path(path: str) -> None:
  """Flushes a file or a folder's entries to disk."""
  descriptor = os.open(path, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def _fsync_tree(root: str) -> None:
  """Flushes every file and folder under `root` (folders after their entries)."""
  for folder, _, files in os.walk(root, topdown=False):
    for name in files:
      fsync_path(os.path.join(folder, name))
    fsync_path(folder)


def exchange(first: str, second: str) -> bool:
  """Swaps two existing paths in one atomic step (Linux `renameat2` with `RENAME_EXCHANGE`).

  Returns:
    True when swapped; False where the system or file system cannot do it (nothing changed).

  Raises:
    OSError: the swap failed for another reason (nothing changed).
  """
  renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
  if renameat2 is None:
    return False
  if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
               _RENAME_EXCHANGE) == 0:
    return True
  error = ctypes.get_errno()
  if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
    return False
  raise OSError(error, os.strerror(error), first)


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`; if the block succeeds, flushes it to disk and renames
  it to `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
  os.close(handle)
  try:
    yield temporary
    fsync_path(temporary)
    os.replace(temporary, path)
    fsync_path(directory)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields a temporary directory beside `path`; if the block succeeds, flushes it to disk and
  moves it to `path`.

  An existing `path` is swapped with the new directory in one step (`exchange`); where the file
  system cannot swap, it is renamed aside first, so `path` is missing between two renames.
  """
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  temporary = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
  try:
    yield temporary
    _fsync_tree(temporary)
    if not os.path.exists(path):
      os.rename(temporary, path)
    elif not exchange(temporary, path):
      retired = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.old-")
      os.rename(path, os.path.join(retired, "old"))
      os.rename(temporary, path)
      shutil.rmtree(retired, ignore_errors=True)
    fsync_path(parent)
  finally:
    # After a swap the temporary name holds the old directory.
    if os.path.exists(temporary):
      shutil.rmtree(temporary, ignore_errors=True)
