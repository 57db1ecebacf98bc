r"""Time and peak memory of the event-log importer on a generated log, and the chunked CSV readers
it was chosen between.

    python -m benchmarks.events_import [--events=50000000] [--format=csv.gz] [--work_dir=/tmp]
        [--reader_events=5000000] [--beam_events=2000000] [--keep]

1. Readers (`events_readers` in results/benchmarks.json): a `--reader_events` CSV log
   (`benchmarks.event_log`) is read in chunks by pyarrow's streaming CSV reader and by pandas'
   `read_csv(chunksize=...)`, each in its own process: the session and item ids parsed as int64
   and the ISO 8601 times as milliseconds, chunk by chunk (what the importer needs from a chunk).
   Seconds and the process's peak resident memory (VmHWM). pandas is not a dependency of the
   project: its row is skipped when it is not installed.
2. Import (`events_import`): a `--events` log in `--format` is generated, then imported by
   `python -m data.prepare --events=...` in a child process (session column, 7 test days, the
   default memory budget): wall seconds, the seconds of each stage and the numbers of partitions
   and buckets (from the importer's log), the child's peak resident memory (VmHWM, polled), and the
   load average before and after (the machine may be shared: other processes slow the figures
   down). The same command on a `BASELINE_EVENTS` log first shows the process's memory before
   any data (TensorFlow, which writes the shards, is loaded at start).
3. Beam (`events_beam`): a `--beam_events` gzip CSV log is imported by `python -m data.prepare`
   and by `python -m data.prepare_beam --runner=DirectRunner` (the same flags), each in a child
   process: wall seconds, peak resident memory, and whether the two folders are the same bytes
   (the benchmark fails otherwise). The DirectRunner runs the pipeline in one process: it shows
   the pipeline's overhead, not what a cluster runner spreads over workers.

The generated log, the prepared folder and the temporary files live in `--work_dir` and are
removed at the end (`--keep` keeps the log).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import event_log

FLAGS = flags.FLAGS
SOURCE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = ["--session_column=session_id", "--item_column=item_id", "--time_column=timestamp"]
CHUNK_BYTES = 2 << 20
BASELINE_EVENTS = 300_000  # a log whose import shows the process's memory before any data


def _read_with_pyarrow(path: str) -> int:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top
  import pyarrow.csv as pa_csv  # pylint: disable=g-import-not-at-top
  rows = 0
  reader = pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=CHUNK_BYTES,
                                                                 use_threads=False),
                           convert_options=pa_csv.ConvertOptions(
                               include_columns=["session_id", "item_id", "timestamp"],
                               column_types={"session_id": pa.string(), "item_id": pa.string(),
                                             "timestamp": pa.string()}))
  for batch in reader:
    pc.cast(batch.column("session_id"), pa.int64()).to_numpy()
    pc.cast(batch.column("item_id"), pa.int64()).to_numpy()
    pc.cast(pc.cast(batch.column("timestamp"), pa.timestamp("ms", "UTC")),
            pa.int64()).to_numpy()
    rows += batch.num_rows
  return rows


def _read_with_pandas(path: str) -> int:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import pandas as pd  # pylint: disable=g-import-not-at-top
  rows = 0
  for chunk in pd.read_csv(path, chunksize=1 << 16, usecols=["session_id", "item_id", "timestamp"],
                           dtype={"session_id": np.int64, "item_id": np.int64,
                                  "timestamp": str}):
    chunk["session_id"].to_numpy()
    chunk["item_id"].to_numpy()
    pd.to_datetime(chunk["timestamp"], format="%Y-%m-%dT%H:%M:%SZ").to_numpy().astype(
        "datetime64[ms]").astype(np.int64)
    rows += len(chunk)
  return rows


READERS = {"pyarrow": _read_with_pyarrow, "pandas": _read_with_pandas}


def _child_command(*args: str) -> List[str]:
  return [sys.executable, "-m", "benchmarks.events_import", *args]


def compare_readers(path: str) -> List[Dict]:
  """One row per library: seconds and peak memory of reading `path` in chunks, own process."""
  rows = []
  for library in READERS:
    result = subprocess.run(_child_command(f"--reader_only={library}", f"--log={path}"),
                            capture_output=True, text=True, cwd=SOURCE)
    if result.returncode != 0:
      print(f"{library}: skipped ({result.stderr.strip().splitlines()[-1]})")
      continue
    row = json.loads(result.stdout.strip().splitlines()[-1])
    rows.append(row)
    print(f"{library}: {row['rows']:,} rows in {row['seconds']:.1f} s, peak "
          f"{row['peak_rss_mb']:,.0f} MB")
  return rows


def _measure(command: List[str]) -> Dict:
  """Runs `command` in a child process: its wall seconds, peak resident memory (VmHWM, polled),
  output, and the load average before and after."""
  load_before = os.getloadavg()[0]
  started = time.perf_counter()
  with tempfile.TemporaryFile("w+") as log:
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True,
                             cwd=SOURCE)
    peak = 0
    while child.poll() is None:  # the child's high-water mark, until it exits
      peak = max(peak, common.proc_bytes(f"/proc/{child.pid}/status", "VmHWM") or 0)
      time.sleep(0.2)
    seconds = time.perf_counter() - started
    log.seek(0)
    printed = log.read()
  if child.returncode != 0:
    raise RuntimeError(f"{' '.join(command[1:4])} failed:\n{printed[-3000:]}")
  return {"seconds": seconds, "peak_rss_mb": peak / 2**20, "printed": printed,
          "load_average_before": load_before, "load_average_after": os.getloadavg()[0]}


def _import_command(module: str, path: str, output: str, *extra: str) -> List[str]:
  return [sys.executable, "-m", module, "--dataset=events_benchmark", f"--output_dir={output}",
          f"--events={path}", *COLUMNS, "--test_days=7", *extra]


def _shown(command: List[str], work_dir: str) -> str:
  return " ".join(["python", *command[1:]]).replace(work_dir, "WORK_DIR")


def run_import(path: str, work_dir: str, file_format: str) -> Dict:
  """Imports `path` with `python -m data.prepare` in a child process; its figures."""
  output = os.path.join(work_dir, "prepared")
  shutil.rmtree(output, ignore_errors=True)
  command = _import_command("data.prepare", path, output)
  run = _measure(command)
  stats = json.load(open(os.path.join(output, "events_benchmark", "stats.json")))
  layout = re.search(r"\((\d+) partitions, (\d+) buckets\); seconds per stage: (\{.*\})",
                     run["printed"])
  stages = json.loads(layout.group(3))
  row = {"format": file_format, "events": stats["import"]["rows"],
         "log_mb": os.path.getsize(path) / 1e6, "seconds": run["seconds"],
         "events_per_second": stats["import"]["rows"] / run["seconds"],
         "peak_rss_mb": run["peak_rss_mb"],
         **{f"{stage}_seconds": value for stage, value in stages.items()},
         "partitions": int(layout.group(1)), "buckets": int(layout.group(2)),
         "sessions_written": sum(stats["splits"][split]["sessions"]
                                 for split in ("train", "valid", "test")),
         "load_average_before": run["load_average_before"],
         "load_average_after": run["load_average_after"], "command": _shown(command, work_dir)}
  print(json.dumps(row, indent=1))
  return row


def compare_beam(path: str, work_dir: str) -> List[Dict]:
  """Imports `path` with the chunked importer and with the Beam pipeline on the DirectRunner
  (`python -m data.prepare_beam`), each in a child process; one row each, and whether the two
  folders are the same bytes."""
  rows, folders = [], {}
  for module, extra in (("data.prepare", ()), ("data.prepare_beam", ("--runner=DirectRunner",))):
    output = os.path.join(work_dir, module)
    command = _import_command(module, path, output, *extra)
    run = _measure(command)
    folder = os.path.join(output, "events_benchmark")
    folders[module] = {name: open(os.path.join(folder, name), "rb").read()
                       for name in sorted(os.listdir(folder))}
    events = json.load(open(os.path.join(folder, "stats.json")))["import"]["rows"]
    rows.append({"importer": module, "events": events, "log_mb": os.path.getsize(path) / 1e6,
                 "seconds": run["seconds"], "events_per_second": events / run["seconds"],
                 "peak_rss_mb": run["peak_rss_mb"],
                 "load_average_before": run["load_average_before"],
                 "load_average_after": run["load_average_after"],
                 "command": _shown(command, work_dir)})
  same = folders["data.prepare"] == folders["data.prepare_beam"]
  for row in rows:
    row["same_folder"] = same
  print(json.dumps(rows, indent=1))
  if not same:
    raise RuntimeError("the Beam pipeline's folder differs from the chunked importer's")
  return rows


def main(argv):
  del argv
  if FLAGS.reader_only:  # a child process of compare_readers
    started = time.perf_counter()
    rows = READERS[FLAGS.reader_only](FLAGS.log)
    print(json.dumps({"library": FLAGS.reader_only, "rows": rows,
                      "seconds": time.perf_counter() - started,
                      "peak_rss_mb": common.proc_bytes("/proc/self/status", "VmHWM") / 2**20,
                      "chunk": "2 MB blocks" if FLAGS.reader_only == "pyarrow" else
                               "65,536 rows"}))
    return 0
  work_dir = tempfile.mkdtemp(dir=FLAGS.work_dir, prefix="events_benchmark-")
  try:
    rows = []
    for events in (BASELINE_EVENTS, FLAGS.events) if FLAGS.events else ():
      path = os.path.join(work_dir, f"clicks-{events}.{FLAGS.format}")
      started = time.perf_counter()
      event_log.write_log(path, events, "parquet" if FLAGS.format == "parquet" else "csv")
      print(f"generated {events:,} events in {time.perf_counter() - started:.0f} s "
            f"({os.path.getsize(path) / 1e6:,.0f} MB)")
      rows.append(run_import(path, work_dir, FLAGS.format))
      if not FLAGS.keep:
        os.remove(path)
    if FLAGS.reader_events:
      path = os.path.join(work_dir, "readers.csv")
      event_log.write_log(path, FLAGS.reader_events, "csv")
      common.record("events_readers", compare_readers(path))
    if rows:
      common.record("events_import", rows)
    if FLAGS.beam_events:
      path = os.path.join(work_dir, f"beam-{FLAGS.beam_events}.csv.gz")
      event_log.write_log(path, FLAGS.beam_events, "csv")
      common.record("events_beam", compare_beam(path, work_dir))
  finally:
    if FLAGS.keep:
      print(f"kept {work_dir}")
    else:
      shutil.rmtree(work_dir, ignore_errors=True)
  return 0


if __name__ == "__main__":
  flags.DEFINE_integer("events", 50_000_000, "Events of the imported log (0: skip).")
  flags.DEFINE_integer("beam_events", 2_000_000, "Events of the log imported by both the chunked "
                       "importer and the Beam pipeline on the DirectRunner (0: skip).")
  flags.DEFINE_enum("format", "csv.gz", ["csv", "csv.gz", "parquet"], "Format of that log.")
  flags.DEFINE_integer("reader_events", 5_000_000, "Events of the readers' CSV log (0: skip).")
  flags.DEFINE_string("work_dir", None, "Where the temporary folder goes (default: $TMPDIR).")
  flags.DEFINE_bool("keep", False, "Keep the generated files.")
  flags.DEFINE_enum("reader_only", None, list(READERS), "Internal: read --log with one library.")
  flags.DEFINE_string("log", None, "Internal: the log of --reader_only.")
  app.run(main)
