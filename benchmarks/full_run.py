r"""`python -m trainer.main` under the full protocol, its artefacts copied into results/.

    python -m benchmarks.full_run --dataset=gowalla [--variant=attenmixer] [--runs_dir=runs] \
        [--results_dir=results] [-- trainer flags]

Runs the trainer's default protocol (selection on validation, then the refit on all training
sessions; see `trainer.main`) in `<runs_dir>/<dataset>-<variant>-full`, its log teed to that path
plus `.log`, then copies each stage's `metrics.json`, `config.json`, the log and a `command.txt`
holding this command to `<results_dir>/<dataset>/<variant>/` (selection) and `.../refit/`.

Resumable: rerun the same command after an interruption. In a fresh checkout (run folders gone)
whose results hold the selection stage, the trainer refits from that copy (`--selection_from`), so
only the refit is trained; with the refit's results too, nothing is. A committed stage of another
configuration (e.g. from before a default changed) is reported and neither reused nor overwritten.
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
flags.DEFINE_string("results_dir", common.RESULTS_DIR, "Where <dataset>/<variant>/ is written.")


def main(argv):
  run_dir = trainer_runs.full_run_dir(FLAGS.runs_dir, FLAGS.dataset, FLAGS.variant)
  destination = os.path.join(FLAGS.results_dir, FLAGS.dataset, FLAGS.variant)
  args = [f"--dataset={FLAGS.dataset}", f"--variant={FLAGS.variant}", f"--run_dir={run_dir}",
          "--protocol=full", *argv[1:]]
  return trainer_runs.full_protocol_and_copy(args, run_dir, destination,
                                             common.environment()["command"])


if __name__ == "__main__":
  app.run(main)
