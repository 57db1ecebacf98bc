"""The event-log importer: `python -m data.prepare --events=FILE` (`data.events`).

Small logs written in tmp_path, imported into prepared folders and read back as sessions of raw
item ids (train, valid, test in the folder's order).
"""

import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

import raw_files as raw
from benchmarks import event_log
from conftest import run_module
from data import events, protocols, registry
from data.errors import EventLogError
from data.events_config import EventsConfig, ImportResources, from_preset
from data.prepare import PrepareConfig, prepare
from data.prepared import PreparedDataError

DAY = 86400


def write_csv(path, rows, header=("session", "item", "time"), delimiter=","):
  """Writes `rows` (tuples) under `header` (None: no header line); gzip when the name ends .gz."""
  lines = ([delimiter.join(header)] if header else []) + [
      delimiter.join(map(str, row)) for row in rows]
  data = ("\n".join(lines) + "\n").encode()
  with (gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb")) as out:
    out.write(data)
  return str(path)


def iso(seconds):
  return raw.iso(raw.T0 + seconds)


def session_rows(session, start, items, step=60):
  """Rows (session, item, time) of one session, `step` seconds apart from `start`."""
  return [(session, item, iso(start + k * step)) for k, item in enumerate(items)]


def import_log(tmp_path, path, name="log", resources=None, validation_fraction=0.1, **options):
  """Imports `path` with `options` (columns default to session, item, time); returns the
  prepared dataset."""
  defaults = {"item_column": "item", "time_column": "time"}
  if "user_column" not in options:
    defaults["session_column"] = "session"
  config = PrepareConfig(name, num_shards=2, validation_fraction=validation_fraction,
                         events=EventsConfig(path=str(path), **{**defaults, **options}))
  return prepare(config, str(tmp_path / "out"), resources=resources, overwrite=True)


def read_splits(dataset):
  """{split: sessions of raw item ids} of a prepared folder, in its order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data.tfrecord import parse_sessions  # pylint: disable=g-import-not-at-top
  vocabulary = ("<pad>",) + tuple(dataset.vocabulary().raw_ids)
  splits = {}
  for split in ("train", "valid", "test"):
    sessions = []
    for batch in tf.data.TFRecordDataset(dataset.files(split)).batch(4096):
      sessions += [[vocabulary[i] for i in s] for s in parse_sessions(batch).to_list()]
    splits[split] = sessions
  return splits


def folder_bytes(dataset, everything=False):
  """The prepared folder's shards and vocabulary (`everything`: all its files), byte for byte."""
  names = sorted(f for f in os.listdir(dataset.directory)
                 if everything or f.endswith((".tfrecord", ".txt")))
  return {name: open(os.path.join(dataset.directory, name), "rb").read() for name in names}


# ------------------------------------------------------------------------------------------------
# Formats and chunking.


@pytest.fixture(scope="module")
def generated_log():
  """A 4,000-event log with string ids from the benchmark's generator, as one Arrow table."""
  return pa.concat_tables(event_log.generate_blocks(4000, num_items=60, num_users=200, days=12,
                                                    string_ids=True, block_events=1500))


def write_formats(table, folder):
  paths = {"csv": folder / "log.csv", "csv.gz": folder / "log.csv.gz",
           "tsv.gz": folder / "log.tsv.gz", "parquet": folder / "log.parquet"}
  pa_csv.write_csv(table, paths["csv"])
  for name in ("csv.gz", "tsv.gz"):
    with pa.CompressedOutputStream(str(paths[name]), "gzip") as out:
      pa_csv.write_csv(table, out, pa_csv.WriteOptions(delimiter="\t" if "tsv" in name else ","))
  pq.write_table(table, paths["parquet"], compression="gzip", row_group_size=700)
  return paths


GENERATED = {"session_column": "session_id", "item_column": "item_id",
             "time_column": "timestamp", "test_days": 2}


def test_csv_tsv_gzip_and_parquet_give_the_same_folder(tmp_path, generated_log):
  paths = write_formats(generated_log, tmp_path)
  expected = import_log(tmp_path, paths["csv"], name="csv", **GENERATED)
  splits = read_splits(expected)
  assert len(splits["train"]) > 100 and len(splits["test"]) > 10
  assert all(item.startswith("SKU-") for session in splits["test"] for item in session)
  for name in ("csv.gz", "tsv.gz", "parquet"):
    imported = import_log(tmp_path, paths[name], name=name.replace(".", "_"), **GENERATED)
    assert folder_bytes(imported) == folder_bytes(expected), name
    assert imported.stats()["table1"] == expected.stats()["table1"]


def test_tiny_chunks_and_memory_give_the_same_folder(tmp_path, generated_log, monkeypatch):
  importers = []

  class Recorded(events._Importer):  # pylint: disable=protected-access
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      importers.append(self)

  monkeypatch.setattr(events, "_Importer", Recorded)
  paths = write_formats(generated_log, tmp_path)
  whole = import_log(tmp_path, paths["csv.gz"], name="whole", **GENERATED)
  assert importers[-1].num_partitions == 1 and len(importers[-1].bucket_sessions) == 1
  # The same log into the same folder: stats.json and manifest.json too are the same bytes.
  expected = folder_bytes(whole, everything=True)
  for name in ("csv.gz", "parquet"):
    chunked = import_log(tmp_path, paths[name], name="whole",
                         resources=ImportResources(chunk_bytes=1024, memory_bytes=40_000),
                         **GENERATED)
    assert importers[-1].num_partitions > 5, name
    assert len(importers[-1].bucket_sessions) > 3, name
    found = folder_bytes(chunked, everything=name == "csv.gz")
    assert found == {file: expected[file] for file in found}, name


def test_an_oversized_partition_is_spread_by_another_hash(tmp_path):
  partitions = events._Partitions(str(tmp_path), 1)  # pylint: disable=protected-access
  keys = np.repeat(np.arange(50), 20)
  table = pa.table({"key": keys, "time": np.arange(1000), "item": np.zeros(1000, np.int32),
                    "row": np.arange(1000)})
  partitions.write(table, keys)
  partitions.close()
  seen = {}
  for part, events_of in partitions.tables(largest=100):
    for key in set(events_of.column("key").to_pylist()):
      assert key not in seen, "one id's events in two partitions"
      seen[key] = part
    assert events_of.num_rows <= 300
  assert sorted(seen) == list(range(50)) and partitions.count > 10
  assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------------------
# Sessions, filters and splits.


def test_users_are_cut_at_gaps_longer_than_the_interval(tmp_path):
  gap = 3600
  rows = [("u1", "a", iso(0)), ("u1", "b", iso(gap)),        # a gap of exactly the interval
          ("u1", "a", iso(2 * gap + 1)), ("u1", "c", iso(2 * gap + 61)),   # one second more
          ("u2", "b", iso(10)), ("u2", "c", iso(20))]
  path = write_csv(tmp_path / "log.csv", rows[::-1], header=("user", "item", "time"))
  splits = read_splits(import_log(tmp_path, path, user_column="user", session_gap_seconds=gap,
                                  min_item_support=1, test_fraction=0.34))
  # By end time: u2 (20 s), u1's first (1 h), u1's second (2 h 1 min): the newest third is test.
  assert splits == {"train": [["b", "c"]], "valid": [["a", "b"]], "test": [["a", "c"]]}
  # The same rows with a session column: one session per user, one left for training.
  with pytest.raises(EventLogError, match="1 training sessions are too few"):
    import_log(tmp_path, path, session_column="user", min_item_support=1, test_fraction=0.5)


def filter_log(tmp_path):
  # Counts a 4, b 3, c 2, v 1 (S5 is the test session, 10 days later).
  rows = (session_rows("S1", 0, ["a", "b"]) + session_rows("S2", 100, ["a", "b"]) +
          session_rows("S3", 200, ["a", "c"]) + session_rows("S4", 300, ["c", "v"]) +
          session_rows("S5", 10 * DAY, ["a", "b"]))
  return write_csv(tmp_path / "log.csv", rows)


def test_length_and_support_filters_once_or_until_stable(tmp_path):
  path = filter_log(tmp_path)
  options = dict(min_item_support=2, min_session_length=2, test_days=1)
  # Once: v goes (1 event), so S4 = [c] is too short; c keeps its 2 events counted before.
  once = read_splits(import_log(tmp_path, path, **options))
  assert once == {"train": [["a", "b"], ["a", "b"]], "valid": [["a", "c"]],
                  "test": [["a", "b"]]}
  # Until stable: the next round counts c once, drops it, and S3 = [a] goes.
  stable = read_splits(import_log(tmp_path, path, filter_until_stable=True, **options))
  assert stable == {"train": [["a", "b"]], "valid": [["a", "b"]], "test": [["a", "b"]]}
  steps = [step["step"] for step in json.load(open(
      tmp_path / "out" / "log" / "stats.json"))["import"]["steps"]]
  assert steps[:4] == ["read", "min_session_length=2 (round 1)",
                       "min_item_support=2 (round 1)", "min_session_length=2 (round 2)"]


def test_repeats_then_truncation_then_top_items_then_lengths(tmp_path):
  # S1: its repeats go first, so truncating to 3 keeps a b c (truncation first: a a a). S2's g
  # (4 events) is beyond the truncation: it does not count for the top 3 items, a b c (5, 5, 4
  # events kept; g would have 5). So S3 = [g, a] loses g and is too short, S4 loses d.
  rows = session_rows("S1", 0, ["a", "a", "a", "b", "c"])
  rows += session_rows("S2", 100, ["a", "b", "c", "g", "h", "g", "h", "g", "h", "g"])
  rows += session_rows("S3", 200, ["g", "a"]) + session_rows("S4", 300, ["c", "d", "b"])
  rows += session_rows("S5", 400, ["a", "b"]) + session_rows("S6", 10 * DAY, ["b", "c", "a"])
  path = write_csv(tmp_path / "log.csv", rows)
  options = dict(max_session_length=3, top_items=3, min_item_support=1, test_days=1)
  splits = read_splits(import_log(tmp_path, path, remove_repeats=True, **options))
  # By end time: S2 (220 s), S1 (240 s), S4 (420 s); S5 (460 s) is the newest 10%: validation.
  assert splits == {"train": [["a", "b", "c"], ["a", "b", "c"], ["c", "b"]],
                    "valid": [["a", "b"]], "test": [["b", "c", "a"]]}
  splits = read_splits(import_log(tmp_path, path, **options))  # repeats kept
  assert splits["train"][0] == ["a", "a", "a"]


def split_log(tmp_path, second_items=("b", "b", "b", "b")):
  """Sessions S1-S4 ending on days 0, 1, 2 and 3 (their second items given), and S5 ending with
  S4, whose id comes first in the file."""
  rows = [("S5", "a", iso(3 * DAY - 60))]
  for number, (day, item) in enumerate(zip(range(4), second_items), start=1):
    rows += session_rows(f"S{number}", day * DAY - 60, ["a", item])
  rows += [("S5", "b", iso(3 * DAY))]
  return write_csv(tmp_path / "log.csv", rows)


def test_test_split_by_days_and_by_fraction(tmp_path):
  path = split_log(tmp_path)
  options = dict(min_item_support=1, validation_fraction=0.01)
  # The last day: sessions ending at or after latest - 1 day (S3 ends exactly then).
  dataset = import_log(tmp_path, path, test_days=1, **options)
  assert dataset.num_sessions("test") == 3 and dataset.num_sessions("train+valid") == 2
  # SR-GNN drops the sessions exactly at the split time.
  dataset = import_log(tmp_path, path, test_days=1, drop_sessions_at_split=True, **options)
  assert dataset.num_sessions("test") == 2 and dataset.num_sessions("train+valid") == 2
  # The newest 20% of 5 sessions: S4, which ends with S5 but whose id appears later.
  path = split_log(tmp_path, second_items=("c", "b", "b", "c"))
  splits = read_splits(import_log(tmp_path, path, test_fraction=0.2, **options))
  assert splits["test"] == [["a", "c"]] and len(splits["train"] + splits["valid"]) == 4


# ------------------------------------------------------------------------------------------------
# Presets: the same sessions as the published protocols' functions (data.protocols).


def gowalla_like(rng, item_offset=0):
  """(user, seconds, item) events: sessions with gaps of 0, 1 h, exactly a day and a day and a
  second, repeats, popular items, and end times on whole hours (ties)."""
  events = []
  for user in range(1, 90):
    t = raw.T0 + 3600 * int(rng.integers(0, 200))
    for _ in range(int(rng.integers(1, 30))):
      t += int(rng.choice([0, 3600, DAY, DAY + 1, 2 * DAY]))
      events.append((user, t, int(rng.zipf(1.4)) % 50 + 1 + item_offset))
  rng.shuffle(events)
  return events


def diginetica_like(rng):
  """Views of sessions in increasing sessionId, one eventdate each, timeframes under a day."""
  views = []
  for session in range(1, 300):
    day, timeframe = int(rng.integers(0, 20)), 0
    for _ in range(int(rng.integers(1, 25))):
      timeframe += int(rng.choice([0, 1000, 60000]))
      views.append((session, int(rng.zipf(1.3)) % 70 + 1, timeframe, f"2016-05-{day + 1:02d}"))
  return views


def yoochoose_like(rng):
  """Clicks of interleaved sessions, each session's rows in time order; times on whole minutes."""
  clicks = []
  for session in range(1, 400):
    t = raw.T0 + 60 * int(rng.integers(0, 8 * 24 * 60))
    for _ in range(int(rng.integers(1, 12))):
      t += 60 * int(rng.integers(0, 3))
      clicks.append((session, t, int(rng.zipf(1.3)) % 80 + 1, 0))
  clicks.sort(key=lambda click: click[1])
  return clicks


def assert_same_sessions(dataset, split):
  """The folder's published train (train + valid) and test equal `split`'s up to renaming items."""
  found = read_splits(dataset)
  ours = (found["train"] + found["valid"], found["test"])
  assert [len(s) for s in ours[0]] == [len(s) for s in split.train]
  assert [len(s) for s in ours[1]] == [len(s) for s in split.test]
  to_protocol, back = {}, {}
  for mine, theirs in zip(ours[0] + ours[1], split.train + split.test):
    for a, b in zip(mine, theirs):
      assert to_protocol.setdefault(a, b) == b and back.setdefault(b, a) == a, (mine, theirs)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("preset", ["gowalla", "lastfm", "diginetica", "diginetica_srgnn",
                                    "yoochoose1_64", "yoochoose1_4"])
def test_presets_give_the_protocols_sessions(tmp_path, monkeypatch, preset, seed):
  rng = np.random.default_rng(seed)
  overrides = {}
  if preset == "gowalla":
    monkeypatch.setattr(protocols, "GOWALLA_TOP_ITEMS", 30)  # ties in the counts at the cut
    overrides["top_items"] = 30
    path = raw.gowalla_file(tmp_path / "gowalla.txt.gz", gowalla_like(rng))
    expected = protocols.preprocess_gowalla(path)
  elif preset == "lastfm":
    monkeypatch.setattr(protocols, "LASTFM_TOP_ITEMS", 30)
    overrides["top_items"] = 30
    events = [(user, t, f"mbid-{item:04d}") for user, t, item in gowalla_like(rng)]
    path = raw.lastfm_file(tmp_path / "lastfm.tsv", events)
    expected = protocols.preprocess_lastfm(path)
  elif preset.startswith("diginetica"):
    views = diginetica_like(rng)
    if preset == "diginetica_srgnn":  # SR-GNN: any row order
      views = [views[k] for k in rng.permutation(len(views))]
    path = raw.diginetica_file(tmp_path / "views.csv", views)
    expected = (protocols.preprocess_diginetica_lessr(path) if preset == "diginetica" else
                protocols.preprocess_diginetica_srgnn(path))
  else:
    path = raw.yoochoose_file(tmp_path / "clicks.dat", yoochoose_like(rng))
    expected = protocols.preprocess_yoochoose(path, int(preset.split("_")[1]))
  config = PrepareConfig(preset, num_shards=2, events=from_preset(preset, path, **overrides))
  dataset = prepare(config, str(tmp_path / "out"))
  assert len(expected.test) > 5
  assert_same_sessions(dataset, expected)


GOWALLA_RAW = os.path.join(registry.DEFAULT_RAW_DIR, "loc-gowalla_totalCheckins.txt.gz")


@pytest.mark.skipif(not os.path.isfile(GOWALLA_RAW), reason=f"needs SNAP's raw file {GOWALLA_RAW}")
def test_the_gowalla_preset_gives_table_1_from_the_raw_file(tmp_path):
  config = PrepareConfig("gowalla", events=from_preset("gowalla", GOWALLA_RAW))
  table1 = prepare(config, str(tmp_path / "out")).stats()["table1"]
  assert table1 == {"clicks": 1122788, "examples": 830893, "items": 29510, "average_length": 3.85}


# ------------------------------------------------------------------------------------------------
# Bad input: exit 2, a message naming the file, column and row (or the filter), nothing written.


def run_import(tmp_path, path, *flags):
  return run_module("data.prepare", "--dataset=bad", f"--output_dir={tmp_path / 'out'}",
                    f"--events={path}", *flags)


COLUMNS = ("--session_column=session", "--item_column=item", "--time_column=time")


def good_rows():
  rows = []
  for number in range(12):
    rows += session_rows(f"S{number}", number * DAY, ["a", "b", "c", "a"])
  return rows


@pytest.mark.parametrize("case", ["misnamed column", "missing field", "bad time", "mixed ids",
                                  "filters empty it", "no test item seen in training"])
def test_bad_input_exits_2_naming_file_column_and_row(tmp_path, case):
  rows, flags = good_rows(), list(COLUMNS) + ["--test_days=2"]
  expected = []
  if case == "misnamed column":
    flags[1] = "--item_column=item_id"
    expected = ["column 'item_id': no such column", "'session', 'item', 'time'"]
  elif case == "missing field":
    rows[6] = ("S1", "b")
    expected = ["line 8: expected 3 fields, found 2"]
  elif case == "bad time":
    rows[4] = ("S1", "a", "2021-02-30T00:00:00Z")
    expected = ["row 5 (line 6), column 'time': time '2021-02-30T00:00:00Z' does not parse"]
  elif case == "mixed ids":
    rows = [(session, 1000 + ord(item), time) for session, item, time in rows]
    rows[9] = ("S2", "SKU-9", rows[9][2])
    expected = ["row 10 (line 11), column 'item': mixed id types: id 'SKU-9' is not an integer",
                "first id '1097' (row 1) is"]
  elif case == "filters empty it":
    flags.append("--min_item_support=100")
    expected = ["no session is left after the filter min_item_support=100, "
                "min_session_length=2", "read 48/12"]
  else:  # the test sessions' items are never clicked in training
    rows = rows[:-8] + session_rows("S10", 10 * DAY, ["x", "y", "z"] * 3) + session_rows(
        "S11", 11 * DAY, ["z", "y", "x"] * 3)
    expected = ["no test session is left", "the last 2 day(s)", "2 sessions"]
  path = write_csv(tmp_path / "log.csv", rows)
  result = run_import(tmp_path, path, *flags)
  assert result.returncode == 2, result.stderr[-2000:]
  message = result.stderr.strip().splitlines()[-1]
  assert message.startswith(f"error: {path}: "), message
  for part in expected:
    assert part in message, message
  assert sorted(os.listdir(tmp_path)) == ["log.csv"]  # no output folder, no temporary files


def test_bad_options_exit_2(tmp_path):
  path = write_csv(tmp_path / "log.csv", good_rows())
  result = run_import(tmp_path, path, *COLUMNS)
  assert result.returncode == 2 and "choose one test split" in result.stderr
  assert sorted(os.listdir(tmp_path)) == ["log.csv"]


# ------------------------------------------------------------------------------------------------
# The prepared folder is the trainer's: reused by configuration, trained with no extra step.


def test_an_imported_folder_is_reused_and_another_import_refused(tmp_path):
  path = write_csv(tmp_path / "log.csv", good_rows())
  options = dict(session_column="session", item_column="item", time_column="time", test_days=2)
  config = PrepareConfig("shop", num_shards=2, events=EventsConfig(path=path, **options))
  first = prepare(config, str(tmp_path / "out"))
  # The same import, and a command naming no event log (as the trainer's), reuse it.
  for again in (config, PrepareConfig("shop", num_shards=2)):
    assert prepare(again, str(tmp_path / "out")).manifest == first.manifest
  other = PrepareConfig("shop", num_shards=2,
                        events=EventsConfig(path=path, **{**options, "test_days": 3}))
  with pytest.raises(PreparedDataError, match="another configuration"):
    prepare(other, str(tmp_path / "out"))


def test_a_csv_to_a_served_model_in_five_commands(tmp_path):
  """The README's five commands (issue 28, point 6), on a generated log with string ids: import,
  train (a few steps), export, serve with `serving.server`, query over gRPC (`serving.client`)
  and REST with string ids."""
  import http.client  # pylint: disable=g-import-not-at-top
  from serving import client  # pylint: disable=g-import-not-at-top
  from serving.testing import ServerProcess  # pylint: disable=g-import-not-at-top
  log = tmp_path / "clicks.csv"
  event_log.write_log(str(log), 6000, "csv", num_items=150, num_users=300, days=20,
                      string_ids=True)
  prepared = tmp_path / "prepared"
  result = run_module("data.prepare", "--dataset=myshop", f"--events={log}",
                      "--session_column=session_id", "--item_column=item_id",
                      "--time_column=timestamp", "--test_days=7", f"--output_dir={prepared}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Table 1: clicks" in result.stdout
  vocabulary = (prepared / "myshop" / "vocab.txt").read_text().split()
  assert vocabulary[0] == "<pad>" and all(v.startswith("SKU-") for v in vocabulary[1:])

  run = tmp_path / "runs" / "myshop"
  result = run_module("trainer.main", "--dataset=myshop", f"--run_dir={run}",
                      f"--output_dir={prepared}", "--epochs=1", "--max_steps_per_epoch=15",
                      "--embedding_dim=16", "--num_heads=2", "--batch_size=32",
                      "--length_multiple=0")  # One width to compile; cut batches: test_model.py.
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Reusing the prepared dataset" in result.stderr
  assert json.load(open(run / "metrics.json"))["dataset"] == "myshop"
  export = run / "export" / "attenmixer"
  assert sorted(os.listdir(export)) == ["1"]

  server = ServerProcess(str(tmp_path), f"--model_base_path={export}", "--model_name=myshop")
  try:
    with client.channel(server.address) as channel:
      server.wait_until_available("myshop", channel)
    session = vocabulary[1:3]
    result = run_module("serving.client", f"--server={server.address}", "--model_name=myshop",
                        f"--session={','.join(session)}", "--k=10", timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(answers) == 10 and all(item in vocabulary[1:] for item, _ in answers)
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
    connection.request("POST", "/v1/models/myshop:predict",
                       body=json.dumps({"instances": [session]}))
    reply = connection.getresponse()
    body = json.loads(reply.read())
    connection.close()
    assert reply.status == 200, body
    prediction = body["predictions"][0]
    assert prediction["item_ids"][:10] == [item for item, _ in answers]
    assert prediction["unknown_items"] == 0
  finally:
    assert server.stop() == 0, server.log()[-3000:]
