"""Property-based tests of the session-file reader: any bytes give sessions or a clear error."""

import gzip
import os
import tempfile

import hypothesis
from hypothesis import strategies as st

from data.errors import DataFormatError
from data.session_files import read_sessions

SETTINGS = hypothesis.settings(max_examples=150, deadline=None, derandomize=True)


def read_bytes(content: bytes, compress: bool, truncate_to=None):
  suffix = ".txt.gz" if compress else ".txt"
  with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "sessions" + suffix)
    data = gzip.compress(content) if compress else content
    with open(path, "wb") as f:
      f.write(data if truncate_to is None else data[:truncate_to])
    try:
      return path, read_sessions(path), None
    except DataFormatError as error:
      return path, None, error


def check(path, sessions, error):
  if error is None:
    assert all(session and all(item > 0 for item in session) for session in sessions)
  else:
    assert str(error).startswith(path), str(error)
    assert error.line is None or error.line >= 1


@SETTINGS
@hypothesis.given(content=st.binary(max_size=2000), compress=st.booleans())
def test_arbitrary_bytes(content, compress):
  check(*read_bytes(content, compress))


@SETTINGS
@hypothesis.given(
    sessions=st.lists(st.lists(st.integers(1, 2**40), min_size=1, max_size=30), max_size=50),
    cut=st.floats(0, 1), compress=st.booleans())
def test_valid_files_round_trip_and_truncated_ones_fail_cleanly(sessions, cut, compress):
  content = "".join(" ".join(map(str, s)) + "\n" for s in sessions).encode()
  path, got, error = read_bytes(content, compress)
  assert error is None and got == sessions
  truncated = int(cut * len(gzip.compress(content) if compress else content))
  check(*read_bytes(content, compress, truncate_to=truncated))


@SETTINGS
@hypothesis.given(text=st.text(max_size=300), encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_odd_encodings(text, encoding):
  try:
    content = text.encode(encoding)
  except UnicodeEncodeError:
    hypothesis.reject()
  check(*read_bytes(content, compress=False))


def test_huge_line():
  content = (" ".join(["7"] * 200_000) + "\n" + "1 x\n").encode()
  path, sessions, error = read_bytes(content, compress=True)
  assert sessions is None and error.line == 2 and "'x'" in str(error)
