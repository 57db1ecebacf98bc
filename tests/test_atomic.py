"""data.atomic: outputs appear whole, are flushed to disk first, and a replaced folder is never
missing, even when the writer is killed."""

import os
import signal
import subprocess
import sys
import threading

import pytest

from conftest import ROOT
from data import atomic


def _write_version(folder, number):
  for name in ("a.txt", "b.txt"):
    with open(os.path.join(folder, name), "w") as out:
      out.write(f"version {number}")


class _Superseded(Exception):
  """The folder a reader opened was replaced and deleted while it read."""


def _read_version(folder):
  """The version a folder holds, its files read through one handle of the folder (as a reader
  that opened it sees them). Raises OSError if the path is missing, AssertionError if the files
  are of different versions, `_Superseded` if the opened folder was deleted meanwhile."""
  handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
  try:
    contents = {}
    for name in ("a.txt", "b.txt"):
      try:
        descriptor = os.open(name, os.O_RDONLY, dir_fd=handle)
      except FileNotFoundError as error:
        raise _Superseded() from error
      with os.fdopen(descriptor) as stream:
        contents[name] = stream.read()
  finally:
    os.close(handle)
  assert len(set(contents.values())) == 1, contents
  return contents["a.txt"]


def test_a_folder_is_never_missing_while_it_is_replaced(tmp_path):
  path = str(tmp_path / "prepared")
  with atomic.atomic_directory(path) as temporary:
    _write_version(temporary, 0)
  seen, problems, done = set(), [], threading.Event()

  def reader():
    while not done.is_set():
      try:
        seen.add(_read_version(path))
      except _Superseded:
        pass  # a new version is in place; the next read sees it
      except (OSError, AssertionError) as error:
        problems.append(repr(error))

  thread = threading.Thread(target=reader)
  thread.start()
  try:
    for number in range(1, 201):
      with atomic.atomic_directory(path) as temporary:
        _write_version(temporary, number)
  finally:
    done.set()
    thread.join()
  assert not problems, problems[:3]
  assert len(seen) > 1 and _read_version(path) == "version 200"
  assert os.listdir(tmp_path) == ["prepared"]  # no temporary or retired folder left


# Replaces FOLDER (holding version 1) with version 2, killing itself at POINT.
KILL_AT = """
import os, signal, sys
from data import atomic
point, path = sys.argv[1], sys.argv[2]
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
exchange = atomic.exchange
def patched(first, second):
  if point == "before_swap":
    kill()
  swapped = exchange(first, second)
  if point == "after_swap":
    kill()
  return swapped
atomic.exchange = patched
with atomic.atomic_directory(path) as temporary:
  for name in ("a.txt", "b.txt"):
    with open(os.path.join(temporary, name), "w") as out:
      out.write("version 2")
"""


@pytest.mark.parametrize("point,expected", [("before_swap", "version 1"),
                                            ("after_swap", "version 2")])
def test_a_writer_killed_while_replacing_leaves_the_old_or_the_new_folder(tmp_path, point,
                                                                          expected):
  path = str(tmp_path / "prepared")
  with atomic.atomic_directory(path) as temporary:
    _write_version(temporary, 1)
  killed = subprocess.run([sys.executable, "-c", KILL_AT, point, path], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                          timeout=120)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert _read_version(path) == expected


def test_outputs_are_flushed_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
  events = []
  real_fsync, real_replace, real_exchange = os.fsync, os.replace, atomic.exchange

  def fsync(descriptor):
    events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
    real_fsync(descriptor)

  def replace(source, destination):
    events.append(("rename", source))
    real_replace(source, destination)

  def exchange(first, second):
    events.append(("rename", first))
    return real_exchange(first, second)

  monkeypatch.setattr(os, "fsync", fsync)
  monkeypatch.setattr(os, "replace", replace)
  monkeypatch.setattr(atomic, "exchange", exchange)

  path = str(tmp_path / "stats.json")
  with atomic.atomic_output(path) as temporary:
    with open(temporary, "w") as out:
      out.write("{}")
  assert events == [("fsync", temporary), ("rename", temporary), ("fsync", str(tmp_path))]

  events.clear()
  folder = str(tmp_path / "prepared")
  os.makedirs(folder)
  with atomic.atomic_directory(folder) as temporary:
    _write_version(temporary, 1)
  renamed = events.index(("rename", temporary))
  flushed_before = {path for kind, path in events[:renamed] if kind == "fsync"}
  assert {os.path.join(temporary, "a.txt"), os.path.join(temporary, "b.txt"),
          temporary} <= flushed_before
  assert events[renamed + 1:] == [("fsync", str(tmp_path))]
