"""`python -m serving.export`: exports the model of a finished run folder as a servable version.

    python -m serving.export --run_dir=RUN [--export_dir=RUN/export] [--model_name=attenmixer]
        [--index=brute_force|scann|portable_ann] [--version=N] [--index_option=NAME=VALUE ...]
        [--min_recall=0.99] [--novalidate] [--push_if_better [--push_metric=mrr_at_20]]

(`--checkpoint_dir` is accepted as another name for `--run_dir`.) Rebuilds the run's model with
the weights of its selected epoch (of a full-protocol run folder: the refit's; see
`trainer.run_dir.load_trained_model`) and exports it with `trainer.export.export_model`, which
documents the layout and the signatures; the run's validation metrics (`metrics.json`, `valid`)
are recorded with the version. An approximate index's recall is measured on the run's held-out
sessions (its validation split; the test split for a model refit on validation) and its search
breadth tuned to `--min_recall`. Prints the version folder; exits with 1 and the reason when the
export fails or is refused, with 2 when no run folder is given or no search setting reaches
`--min_recall` (nothing is published).
"""

import json
import os
import sys
from typing import Any, Dict, List

from absl import app
from absl import flags

from tfrs_attenmixer import console
from tfrs_attenmixer import topk
from trainer import export_options
from trainer.export import export_model
from trainer.export_errors import ExportError
from trainer.export_errors import RecallTargetMissed
from trainer.run_dir import METRICS_FILE, RunDirError, load_trained_model


def _parse_index_options(pairs: List[str]) -> Dict[str, Any]:
  options = {}
  for pair in pairs:
    name, separator, value = pair.partition("=")
    if not separator or not name:
      raise ExportError(f"--index_option must be NAME=VALUE; got {pair!r}")
    options[name] = json.loads(value)
  return options


def _define_flags() -> None:
  flags.DEFINE_string("run_dir", None, "Run folder of a trained model (trainer.main --run_dir).")
  flags.DEFINE_string("checkpoint_dir", None, "Another name for --run_dir.")
  flags.DEFINE_string("export_dir", None, "Export base folder. Default: <run_dir>/export.")
  flags.DEFINE_string("model_name", None, "Model folder (TF Serving model name). Default: "
                      "attenmixer for --index=brute_force, else attenmixer_<index>, as the "
                      "trainer's exports; a folder of another index kind is refused.")
  flags.DEFINE_enum("index", "brute_force", topk.INDEX_KINDS, "Top-K index of the export.")
  flags.DEFINE_integer("version", None, "Version number. Default: 1 + the largest existing.")
  flags.DEFINE_integer("max_length", None, "Most recent session items fed to the model. "
                       "Default: the run's training max_length.")
  flags.DEFINE_multi_string("index_option", [], "Index parameter NAME=VALUE (JSON value), e.g. "
                            "num_leaves_to_search=40; see tfrs_attenmixer.topk.")
  export_options.define_min_recall_flag(
      "the run's validation split; the test split for a model refit on it")
  flags.DEFINE_bool("validate", True, "Validate the version in a fresh process before "
                    "publishing it (trainer.push).")
  flags.DEFINE_bool("push_if_better", False, "Publish only if the run's validation "
                    "--push_metric (metrics.json) is not below the newest version's.")
  flags.DEFINE_string("push_metric", "mrr_at_20", "Validation metric --push_if_better compares.")


def main(argv: List[str]) -> int:
  del argv
  values = flags.FLAGS
  run_dir = values.run_dir or values.checkpoint_dir
  if not run_dir:
    print("error: pass --run_dir (or --checkpoint_dir): the run folder of a trained model",
          file=sys.stderr)
    return 2
  try:
    model, prepared, config = load_trained_model(run_dir)
    metrics = None
    if os.path.isfile(os.path.join(run_dir, METRICS_FILE)):
      with open(os.path.join(run_dir, METRICS_FILE)) as stream:
        metrics = (json.load(stream) or {}).get("valid")
    path = export_model(model, prepared, values.export_dir or os.path.join(run_dir, "export"),
                        model_name=values.model_name, index=values.index,
                        version=values.version,
                        max_length=values.max_length or config.train.max_length,
                        validate=values.validate, push_if_better=values.push_if_better,
                        metrics=metrics, push_metric=values.push_metric,
                        min_recall=values.min_recall,
                        recall_split="test" if config.train.train_on_valid else "valid",
                        **_parse_index_options(values.index_option))
  except RecallTargetMissed as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except (ExportError, RunDirError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(path)
  return 0


if __name__ == "__main__":
  _define_flags()
  console.start_tensorflow()  # before absl's start, which initialises the devices
  app.run(main)
