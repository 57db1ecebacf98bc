"""Bad input to `python -m data.prepare`: a clear error naming file and line, exit 1, no output."""

import gzip
import os

import pytest

from conftest import run_module
from data.errors import DataFormatError
from data.prepared import PreparedDataError, PreparedDataset
from data.session_files import read_sessions

GOOD = "1 2 3\n4 5\n2 3 4 5\n"


def write_dataset(root, train=GOOD, test="1 2\n", name="gowalla"):
  folder = root / "data" / name
  folder.mkdir(parents=True)
  for file_name, content in (("train_sessions.txt.gz", train), ("test_sessions.txt.gz", test)):
    if content is None:
      continue
    with gzip.open(folder / file_name, "wb") as f:
      f.write(content if isinstance(content, bytes) else content.encode())
  return folder


def run_prepare(root, *extra):
  return run_module("data.prepare", "--dataset=gowalla", f"--data_dir={root / 'data'}",
                    f"--output_dir={root / 'out'}", "--nodownload", *extra)


def assert_no_output(root):
  out = root / "out"
  assert not out.exists() or os.listdir(out) == [], os.listdir(out)


@pytest.mark.parametrize("train,where,what", [
    ("1 2 3\n4 x 5\n", ":2:", "'x' is not a non-negative integer"),
    ("1 2 3\n4 5\n6 -7\n", ":3:", "'-7' is not a non-negative integer"),
    ("1 2 3\n\n4 5\n", ":2:", "empty line"),
    ("1 2\n3 0 4\n", ":2:", "item id 0 is reserved for padding"),
    ("1 2\n3 4.5\n", ":2:", "'4.5' is not a non-negative integer"),
    (b"1 2\n3 \xff\n", ":2:", "not ASCII text"),
])
def test_malformed_session_lines(tmp_path, train, where, what):
  write_dataset(tmp_path, train=train)
  result = run_prepare(tmp_path)
  assert result.returncode == 1
  assert f"train_sessions.txt.gz{where}" in result.stderr and what in result.stderr, result.stderr
  assert "Traceback" not in result.stderr
  assert_no_output(tmp_path)


def test_missing_file(tmp_path):
  write_dataset(tmp_path, test=None)
  result = run_prepare(tmp_path)
  assert result.returncode == 1
  assert "has no test_sessions.txt.gz" in result.stderr and "Traceback" not in result.stderr
  assert_no_output(tmp_path)


def test_truncated_gzip(tmp_path):
  lines = "".join(f"{i} {i + 1} {i + 2}\n" for i in range(1, 20000)).encode()
  folder = write_dataset(tmp_path, train=lines)
  path = folder / "train_sessions.txt.gz"
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(DataFormatError, match=r"train_sessions\.txt\.gz:\d+: corrupt or truncated gzip"):
    read_sessions(str(path))
  result = run_prepare(tmp_path)
  assert result.returncode == 1 and "corrupt or truncated gzip" in result.stderr
  assert_no_output(tmp_path)


def test_no_dataset_anywhere_says_what_to_do(tmp_path):
  (tmp_path / "data").mkdir()
  result = run_module("data.prepare", "--dataset=retailrocket", f"--data_dir={tmp_path / 'data'}",
                      f"--output_dir={tmp_path / 'out'}", "--nodownload")
  assert result.returncode == 1
  assert "put train_sessions.txt.gz and test_sessions.txt.gz in <data_dir>/retailrocket/" in result.stderr
  assert_no_output(tmp_path)


def test_corrupt_tfrecord_shard_is_named(tmp_path):
  lines = "".join(f"{i} {i + 1} {i + 2}\n" for i in range(1, 300))
  write_dataset(tmp_path, train=lines, test="1 2 3\n")
  assert run_prepare(tmp_path, "--num_shards=2").returncode == 0
  shard = tmp_path / "out" / "gowalla" / "train-00001-of-00002.tfrecord"
  data = bytearray(shard.read_bytes())
  data[len(data) // 2] ^= 0xFF
  shard.write_bytes(bytes(data))
  with pytest.raises(PreparedDataError, match=r"train-00001-of-00002\.tfrecord: shard is corrupt"):
    PreparedDataset.load(str(tmp_path / "out" / "gowalla"))
  # Re-running without --overwrite refuses to touch it; with --overwrite it is rebuilt.
  result = run_prepare(tmp_path, "--num_shards=2")
  assert result.returncode == 1 and "shard is corrupt" in result.stderr
  assert run_prepare(tmp_path, "--num_shards=2", "--overwrite").returncode == 0
  PreparedDataset.load(str(tmp_path / "out" / "gowalla"))


def test_failed_overwrite_keeps_the_previous_output(tmp_path):
  folder = write_dataset(tmp_path)
  assert run_prepare(tmp_path).returncode == 0
  before = sorted(os.listdir(tmp_path / "out" / "gowalla"))
  with gzip.open(folder / "train_sessions.txt.gz", "wt") as f:
    f.write("1 2\nbad\n")
  result = run_prepare(tmp_path, "--overwrite")
  assert result.returncode == 1 and "train_sessions.txt.gz:2:" in result.stderr
  assert sorted(os.listdir(tmp_path / "out")) == ["gowalla"]
  assert sorted(os.listdir(tmp_path / "out" / "gowalla")) == before
  PreparedDataset.load(str(tmp_path / "out" / "gowalla"))
