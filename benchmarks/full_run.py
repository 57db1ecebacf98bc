r"""A full training run with the paper's protocol, its artefacts copied into results/<dataset>/.

    python -m benchmarks.full_run --dataset=gowalla [--variant=attenmixer] [-- trainer flags]

Runs `python -m trainer.main` (resumable: rerun the same command after an interruption) with its
log teed to `runs/<dataset>-<variant>-full.log`, then copies `metrics.json`, `config.json` and the
log to `results/<dataset>/<variant>/`, beside a `command.txt` holding the exact command.
"""

import os

from absl import app
from absl import flags

from benchmarks import common
from benchmarks import trainer_runs

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "gowalla", "Dataset (a key of data.registry.DATASETS).")
flags.DEFINE_string("variant", "attenmixer", "Model variant (tfrs_attenmixer.config.VARIANTS).")
flags.DEFINE_string("runs_dir", "runs", "Where run folders are kept.")


def main(argv):
  name = f"{FLAGS.dataset}-{FLAGS.variant}-full"
  run_dir = os.path.join(FLAGS.runs_dir, name)
  log_path = os.path.join(FLAGS.runs_dir, f"{name}.log")
  code = trainer_runs.run_trainer([f"--dataset={FLAGS.dataset}", f"--variant={FLAGS.variant}",
                                   f"--run_dir={run_dir}", *argv[1:]], log_path)
  if code:
    return code
  destination = os.path.join(common.RESULTS_DIR, FLAGS.dataset, FLAGS.variant)
  trainer_runs.copy_artefacts(run_dir, log_path, destination, common.environment()["command"])
  print(f"results copied to {destination}")
  return 0


if __name__ == "__main__":
  app.run(main)
