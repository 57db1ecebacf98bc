"""Recording benchmark results (every figure with its command, date, CPU model and thread count)
and timing calls."""

import datetime
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Optional

from data.atomic import atomic_output
from trainer.hardware import cpu_bf16_features, cpu_model

RESULTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")
BENCHMARKS_FILE = os.path.join(RESULTS_DIR, "benchmarks.json")


def proc_bytes(path: str, field: str) -> Optional[int]:
  """The `field:  <n> kB` line of a /proc file (e.g. /proc/self/status, VmRSS), in bytes; None
  if the file or the field is absent."""
  try:
    with open(path) as status:
      for line in status:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def environment() -> Dict[str, Any]:
  """Where and how a measurement was made."""
  return {
      "command": "python -m " + os.path.splitext(
          os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(RESULTS_DIR)))[0].replace(
              os.sep, ".") + " " + " ".join(sys.argv[1:]),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "cpu": cpu_model(),
      "cpu_bf16_features": cpu_bf16_features(),
      "threads": os.cpu_count(),
      "load_average_1min": os.getloadavg()[0],
  }


def record(name: str, results: Any) -> None:
  """Stores `results` under `name` in results/benchmarks.json (other entries are kept)."""
  os.makedirs(RESULTS_DIR, exist_ok=True)
  everything = {}
  if os.path.isfile(BENCHMARKS_FILE):
    with open(BENCHMARKS_FILE) as existing:
      everything = json.load(existing)
  everything[name] = {"environment": environment(), "results": results}
  with atomic_output(BENCHMARKS_FILE) as temporary:
    with open(temporary, "w") as out:
      json.dump(everything, out, indent=1)


def time_calls(function: Callable, steps: int) -> float:
  """Seconds per call, after one warm-up call."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.nest.flatten(function())[0].numpy()
  started = time.perf_counter()
  for _ in range(steps):
    result = function()
  tf.nest.flatten(result)[0].numpy()
  return (time.perf_counter() - started) / steps
