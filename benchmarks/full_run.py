r"""A full training run with the paper's protocol and its refit, artefacts copied into results/.

    python -m benchmarks.full_run --dataset=gowalla [--variant=attenmixer] [--runs_dir=runs] \
        [--results_dir=results] [-- trainer flags]

Two `python -m trainer.main` runs, each resumable (rerun the same command after an interruption;
a finished stage is not run again, nor is one whose results of the same configuration are
committed, so a fresh checkout with the selection stage's results only trains the refit):

1. Selection: the paper's protocol on the training split, early stopping on the validation split
   (the most recent 10% of the training sessions), in `runs/<dataset>-<variant>-full`.
2. Refit: the same configuration trained on all the training sessions (`--train_on_valid`) for the
   number of epochs selected in 1, in `runs/<dataset>-<variant>-full-refit`. Its last epoch's
   test metrics are the honest result; the test set decided nothing.

Each stage's log is teed to its run folder plus `.log`; its `metrics.json`, `config.json`, log
and a `command.txt` holding this command go to `<results_dir>/<dataset>/<variant>/` (selection) and
`<results_dir>/<dataset>/<variant>/refit/`.
"""

import os
from typing import Optional, Tuple

from absl import app
from absl import flags
from absl import logging

from benchmarks import common
from benchmarks import trainer_runs

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "gowalla", "Dataset (a key of data.registry.DATASETS).")
flags.DEFINE_string("variant", "attenmixer", "Model variant (tfrs_attenmixer.config.VARIANTS).")
flags.DEFINE_string("runs_dir", "runs", "Where run folders are kept.")
flags.DEFINE_string("results_dir", common.RESULTS_DIR, "Where <dataset>/<variant>/ is written.")


def run_stage(args, run_dir: str, destination: str) -> Tuple[int, Optional[str]]:
  """Trains one stage unless it is finished, then copies its artefacts to `destination`.

  A stage is finished when its run folder has its metrics, or when `destination` holds them (a
  fresh checkout with committed results, whose run folders are gone); in both cases only with
  the configuration the command trains today (not one from before a default changed).

  Returns:
    The trainer's exit code (0 when finished) and the folder holding the stage's metrics.json
    (None unless finished).
  """
  code = trainer_runs.train_and_copy(args, run_dir, destination, common.environment()["command"])
  return code, trainer_runs.finished_folder(run_dir, destination)


def main(argv):
  run_dir = trainer_runs.full_run_dir(FLAGS.runs_dir, FLAGS.dataset, FLAGS.variant)
  destination = os.path.join(FLAGS.results_dir, FLAGS.dataset, FLAGS.variant)
  args = [*trainer_runs.full_run_args(FLAGS.runs_dir, FLAGS.dataset, FLAGS.variant), *argv[1:]]
  code, selection = run_stage(args, run_dir, destination)
  if code:
    return code
  code, _ = run_stage(trainer_runs.refit_args(args, trainer_runs.selected_epoch(selection)),
                      trainer_runs.refit_dir(run_dir), os.path.join(destination, "refit"))
  return code


if __name__ == "__main__":
  app.run(main)
