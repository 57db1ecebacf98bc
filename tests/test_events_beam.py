"""The event-log import as a Beam pipeline (`python -m data.prepare_beam`, `data.events_beam`).

On the DirectRunner its folder equals the chunked importer's (`data.events`) byte for byte: every
shard, `vocab.txt`, `stats.json` and `manifest.json`, on generated logs that cover the options'
paths, read in parts and sorted in several time buckets; bad input fails as the chunked importer
fails, with the same message.
"""

import json
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from benchmarks import event_log
from conftest import run_module
from data import events, events_beam, registry
from data.errors import EventLogError
from data.events_config import EventsConfig, ImportResources
from data.prepare import PrepareConfig, prepare

COLUMNS = ("session_id", "user_id", "item_id", "timestamp")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
  """Generated 4,000-event logs, {name: path}: string ids (gzip CSV, rows shuffled, some item
  ids missing), integer ids (Parquet; TSV without a header line)."""
  folder = tmp_path_factory.mktemp("logs")
  paths = {}
  for string_ids in (True, False):
    table = pa.concat_tables(event_log.generate_blocks(
        4000, num_items=300, num_users=300, days=12, string_ids=string_ids, block_events=1500))
    if string_ids:  # rows shuffled, and every 400th item id missing
      table = table.take(pa.array(sorted(range(table.num_rows), key=lambda k: (k * 7919) % 4001)))
      missing = pa.array([k % 400 == 7 for k in range(table.num_rows)])
      table = table.set_column(table.schema.get_field_index("item_id"), "item_id", pc.if_else(
          missing, pa.scalar(None, pa.string()), table.column("item_id")))
      paths["strings.csv.gz"] = str(folder / "strings.csv.gz")
      with pa.CompressedOutputStream(paths["strings.csv.gz"], "gzip") as out:
        pa_csv.write_csv(table, out)
    else:
      paths["integers.parquet"] = str(folder / "integers.parquet")
      pq.write_table(table, paths["integers.parquet"], row_group_size=1000)
      paths["integers.tsv"] = str(folder / "integers.tsv")
      pa_csv.write_csv(table, paths["integers.tsv"], pa_csv.WriteOptions(
          include_header=False, delimiter="\t", quoting_style="none"))
  return paths


CASES = {
    # LESSR's path: rows with a missing value skipped, users cut at gaps, string ids, the newest
    # fraction as test, repeats, truncation, top items, and filters that need three rounds to
    # become stable, run two rounds a pipeline (so a second pipeline goes on from the first's
    # sessions).
    "user_gaps": ("strings.csv.gz", dict(
        user_column="user_id", session_gap_seconds=3600, item_column="item_id",
        time_column="timestamp", test_fraction=0.2, remove_repeats=True, max_session_length=6,
        top_items=100, min_item_support=10, filter_until_stable=True, drop_missing=True)),
    # A session column, integer ids, the last days as test.
    "session_column": ("integers.parquet", dict(
        session_column="session_id", item_column="item_id", time_column="timestamp",
        test_days=3)),
    # SR-GNN's path: no header line, a session's time is its last row's, by the day, sessions at
    # the split dropped, the newest quarter of the training examples kept.
    "last_row_divisor": ("integers.tsv", dict(
        column_names=COLUMNS, session_column="session_id", item_column="item_id",
        time_column="timestamp", test_days=2, session_time="last_row", session_time_unit="day",
        drop_sessions_at_split=True, train_examples_divisor=4)),
}


def folder_files(directory):
  return {name: open(os.path.join(directory, name), "rb").read()
          for name in sorted(os.listdir(directory))}


def command_flags(options):
  """`data.prepare`'s flags for `EventsConfig` fields."""
  return [f"--{name}" if value is True else f"--{name}=" + (
      ",".join(value) if isinstance(value, tuple) else str(value))
          for name, value in options.items()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_direct_runner_writes_the_chunked_importers_folder(tmp_path, logs, case):
  log, options = CASES[case]
  config = PrepareConfig("shop", num_shards=3, events=EventsConfig(path=logs[log], **options))
  chunked = prepare(config, str(tmp_path / "chunked"))
  expected = folder_files(chunked.directory)
  assert len(expected) == 10  # 3 + 2 + 2 shards, vocab.txt, stats.json, manifest.json
  assert chunked.num_sessions("train") > 100 and chunked.num_sessions("test") > 10
  # Parts of about 20 kB are read at the same time (Parquet: its 4 row groups; the TSV file:
  # 7 parts; the gzip file: one).
  if case == "session_column":  # the command, in another process
    result = run_module("data.prepare_beam", "--dataset=shop", "--num_shards=3",
                        f"--events={logs[log]}", f"--output_dir={tmp_path / 'beam'}",
                        *command_flags(options), "--runner=DirectRunner", "--read_part_mb=0.02")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "in 4 parts" in result.stderr
  else:  # a small memory budget: sessions sorted in several time buckets
    prepare(config, str(tmp_path / "beam"), resources=ImportResources(memory_bytes=40_000),
            importer=lambda *args: events_beam.import_events(
                *args, pipeline_args=["--runner=DirectRunner"], rounds_per_pipeline=2,
                part_bytes=20_000))
  assert folder_files(tmp_path / "beam" / "shop") == expected
  steps = [step["step"] for step in json.loads(expected["stats.json"])["import"]["steps"]]
  if case == "user_gaps":
    assert "min_item_support=10 (round 3)" in steps  # 3 rounds changed, the 4th did not
    assert json.loads(expected["stats.json"])["import"]["rows_skipped"] == 10
  assert sorted(os.listdir(tmp_path / "beam")) == ["shop"]  # no temporary file left


def bad_log(path, case):
  """A small log with one fault, or whose test sessions' items are never in training."""
  rows = ["session,item,time"]
  for number in range(12):
    rows += [f"S{number},{item},2021-03-{number + 1:02d}T00:0{k}:00Z"
             for k, item in enumerate("abca")]
  if case == "bad time":
    rows[25] = "S6,a,2021-02-30T00:00:00Z"
  elif case == "mixed ids":  # integer ids, and string ones further down
    rows = [row.replace(",a,", ",1,").replace(",b,", ",2,").replace(",c,", ",3,")
            for row in rows]
    rows[30] = rows[30].replace(",1,", ",SKU-1,").replace(",2,", ",SKU-2,")
  elif case == "no test item seen in training":  # the last two days click items of their own
    rows = rows[:-8] + [f"S{n},{item},2021-03-{n + 1:02d}T00:0{k}:00Z"
                        for n in (10, 11) for k, item in enumerate("xyz" * 3)]
  path.write_text("\n".join(rows) + "\n")
  return str(path)


FLAGS = ("--session_column=session", "--item_column=item", "--time_column=time",
         "--test_days=2")


def chunked_error(tmp_path, path, **options):
  config = PrepareConfig("bad", events=EventsConfig(
      path=path, session_column="session", item_column="item", time_column="time", test_days=2,
      **options))
  with pytest.raises(EventLogError) as error:
    events.import_events(config, registry.get_spec("bad"), str(tmp_path / "chunked" / "bad"))
  return config, str(error.value)


def test_bad_input_exits_2_as_the_chunked_importer(tmp_path):
  path = bad_log(tmp_path / "log.csv", "bad time")
  _, expected = chunked_error(tmp_path, path)
  assert "row 25 (line 26), column 'time'" in expected
  # Parts of about 200 bytes: the fault is in the fourth.
  result = run_module("data.prepare_beam", "--dataset=bad", f"--output_dir={tmp_path / 'out'}",
                      f"--events={path}", *FLAGS, "--runner=DirectRunner",
                      "--read_part_mb=0.0002")
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == f"error: {expected}"
  assert sorted(os.listdir(tmp_path)) == ["log.csv"]  # no output folder, no temporary files
  result = run_module("data.prepare_beam", "--dataset=bad", f"--events={path}", *FLAGS,
                      "--runnner=DirectRunner")
  assert result.returncode == 2 and "unknown arguments --runnner=DirectRunner" in result.stderr


@pytest.mark.parametrize("case", ["mixed ids", "filters empty it",
                                  "no test item seen in training"])
def test_a_bad_or_emptied_log_fails_as_the_chunked_importer(tmp_path, case):
  path = bad_log(tmp_path / "log.csv", case)
  options = {"min_item_support": 100} if case == "filters empty it" else {}
  config, expected = chunked_error(tmp_path, path, **options)
  if case == "mixed ids":
    assert "row 30 (line 31), column 'item': mixed id types" in expected
  with pytest.raises(EventLogError) as error:
    events_beam.import_events(config, registry.get_spec("bad"), str(tmp_path / "beam" / "bad"),
                              part_bytes=200)
  assert str(error.value) == expected
  assert sorted(os.listdir(tmp_path)) == ["log.csv"]  # nothing written, no temporary files
