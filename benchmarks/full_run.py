r"""A full training run with the paper's protocol, its artefacts copied into results/<dataset>/.

    python -m benchmarks.full_run --dataset=gowalla [--variant=attenmixer] [-- trainer flags]

Runs `python -m trainer.main` (resumable: rerun the same command after an interruption) with its
log teed to `runs/<dataset>-<variant>-full.log`, then copies `metrics.json`, `config.json` and the
log to `results/<dataset>/<variant>/`, beside a `command.txt` holding the exact command.
"""

import os
import shutil
import subprocess
import sys

from absl import app
from absl import flags

from benchmarks import common

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "gowalla", "Dataset (a key of data.registry.DATASETS).")
flags.DEFINE_string("variant", "attenmixer", "Model variant (tfrs_attenmixer.config.VARIANTS).")
flags.DEFINE_string("runs_dir", "runs", "Where run folders are kept.")


def main(argv):
  extra = argv[1:]
  name = f"{FLAGS.dataset}-{FLAGS.variant}-full"
  run_dir = os.path.join(FLAGS.runs_dir, name)
  log_path = os.path.join(FLAGS.runs_dir, f"{name}.log")
  command = [sys.executable, "-m", "trainer.main", f"--dataset={FLAGS.dataset}",
             f"--variant={FLAGS.variant}", f"--run_dir={run_dir}", *extra]
  os.makedirs(FLAGS.runs_dir, exist_ok=True)
  with open(log_path, "a") as log:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    for line in process.stdout:
      sys.stdout.write(line)
      log.write(line)
    if process.wait() != 0:
      return process.returncode
  destination = os.path.join(common.RESULTS_DIR, FLAGS.dataset, FLAGS.variant)
  os.makedirs(destination, exist_ok=True)
  for source in (os.path.join(run_dir, "metrics.json"), os.path.join(run_dir, "config.json"),
                 log_path):
    shutil.copy(source, os.path.join(destination, os.path.basename(source)))
  with open(os.path.join(destination, "command.txt"), "w") as out:
    out.write(common.environment()["command"] + "\n")
  print(f"results copied to {destination}")
  return 0


if __name__ == "__main__":
  app.run(main)
