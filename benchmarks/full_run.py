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
  run_dir = trainer_runs.full_run_dir(FLAGS.runs_dir, FLAGS.dataset, FLAGS.variant)
  log_path = run_dir + ".log"
  code = trainer_runs.run_trainer(
      [*trainer_runs.full_run_args(FLAGS.runs_dir, FLAGS.dataset, FLAGS.variant), *argv[1:]],
      log_path)
  if code:
    return code
  destination = os.path.join(common.RESULTS_DIR, FLAGS.dataset, FLAGS.variant)
  trainer_runs.copy_artefacts(run_dir, log_path, destination, common.environment()["command"])
  print(f"results copied to {destination}")
  return 0


if __name__ == "__main__":
  app.run(main)
