r"""TensorFlow's thread settings against the training step, one process per setting.

    python -m benchmarks.threads --dataset=gowalla [--settings=0:0,1:1,2:1,1:2,4:2] \
        [--batch_sizes=100 --steps=10 --repetitions=3]

Each setting `intra:inter` (threads of one op : ops run concurrently; 0 is TensorFlow's default,
the number of cores) applies to a whole process, so each runs `benchmarks.train_step` in a fresh
process, one after the other. Two ratios are reported per setting and batch size: the step
against its floor timed in the same process (the setting applies to both), and the step against
the first setting's step at the same batch size (consecutive processes on the same machine, so
within the noise of consecutive runs).
"""

import json
import os
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
# Given to each benchmarks.train_step process as they are.
FORWARDED_FLAGS = ("dataset", "data_dir", "output_dir", "batch_sizes", "steps", "repetitions")


def parse_setting(text: str) -> Tuple[int, int]:
  intra, separator, inter = text.partition(":")
  if not separator or not intra.isdigit() or not inter.isdigit():
    raise ValueError(f"--settings: {text!r} is not `intra_op:inter_op` (two integers >= 0)")
  return int(intra), int(inter)


def time_setting(intra: int, inter: int) -> List[Dict]:
  """`benchmarks.train_step`'s rows (one per batch size) from a process with these threads."""
  forwarded = [flag for name in FORWARDED_FLAGS
               for flag in FLAGS[name].serialize().splitlines() if flag]
  with tempfile.TemporaryDirectory() as folder:
    output = os.path.join(folder, "train_step.json")
    command = [sys.executable, "-m", "benchmarks.train_step", *forwarded, "--variants=default",
               "--noparts", f"--intra_op_threads={intra}", f"--inter_op_threads={inter}",
               "--record_as=", f"--json_output={output}"]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(output) as results:
      return json.load(results)


def compare(rows: List[Dict]) -> List[Dict]:
  """Rows with the step's ratio to the first setting's step at the same batch size."""
  reference = {}
  for r in rows:
    reference.setdefault(r["batch_size"], r["step_ms"])
  return [{"intra_op_threads": r["intra_op_threads"], "inter_op_threads": r["inter_op_threads"],
           "batch_size": r["batch_size"], "step_ms": r["step_ms"], "floor_ms": r["floor_ms"],
           "ratio_to_floor": r["ratio"],
           "step_vs_first_setting": r["step_ms"] / reference[r["batch_size"]],
           "examples_per_second": r["examples_per_second"]} for r in rows]


def main(argv):
  del argv
  settings = [parse_setting(text) for text in FLAGS.settings]
  rows = compare([row for intra, inter in settings for row in time_setting(intra, inter)])
  for row in rows:
    print(f"intra {row['intra_op_threads']} inter {row['inter_op_threads']}, batch "
          f"{row['batch_size']}: step {row['step_ms']:.1f} ms ({row['step_vs_first_setting']:.2f}x "
          f"the first setting), floor {row['floor_ms']:.1f} ms, ratio {row['ratio_to_floor']:.2f}")
  common.record("threads", rows)


def _define_flags() -> None:
  """The flags of the command line (defined when run, so that tests can import this module)."""
  # dataset, data_dir, output_dir:
  from data import flags as _  # pylint: disable=g-import-not-at-top,unused-import
  flags.DEFINE_list("settings", ["0:0", "1:1", "2:1", "1:2", "4:2"],
                    "Thread settings `intra_op:inter_op` to time; the first is the reference.")
  flags.DEFINE_list("batch_sizes", ["100"], "Batch sizes to measure.")
  flags.DEFINE_integer("steps", 10, "Timed steps per repetition.")
  flags.DEFINE_integer("repetitions", 3, "Interleaved repetitions of floor and step (median).")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
