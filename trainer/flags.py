"""Command-line flags of `python -m trainer.main`: one flag per configuration field.

Flags are generated from the fields of `ModelConfig` and `TrainConfig`, with each field's help
text (`tfrs_attenmixer.config.option`), so a new option needs no second definition here. A flag
that is not given keeps the value of the preset and variant (`trainer.config.build_config`).
"""

import dataclasses
from typing import Any, Dict, Optional, Type

from absl import flags

from data import flags as data_flags  # noqa: F401  (defines --dataset, --data_dir, ...)
from tfrs_attenmixer.config import VARIANTS, ModelConfig, option_help
from trainer.config import ExperimentConfig, TrainConfig, build_config

FLAGS = flags.FLAGS

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def _define_fields(cls: Type) -> None:
  helps = option_help(cls)
  for field in dataclasses.fields(cls):
    field_type = {"bool": bool, "int": int, "float": float, "str": str}.get(
        getattr(field.type, "__name__", str(field.type)), str)
    _DEFINE[field_type](field.name, None,
                        f"{helps[field.name]} (default: {field.default!r}, or the preset's)")


_define_fields(ModelConfig)
_define_fields(TrainConfig)
flags.DEFINE_enum("variant", "attenmixer", sorted(VARIANTS),
                  "A model of the paper's tables: Atten-Mixer, its ablations (Table 4), SR-GNN and "
                  "SGNN-HN with and without Atten-Mixer (Table 3), or the authors' code variant.")
flags.DEFINE_string("run_dir", None,
                    "Folder of this run: checkpoints, TensorBoard logs, metrics.json, config.json "
                    "(under --protocol=full, of each stage in selection/ and refit/). Default: "
                    "runs/<dataset>-<variant>. Re-running with the same folder resumes.")
flags.DEFINE_enum("protocol", "full", ["full", "selection"],
                  "full: the paper's protocol, two stages in one run folder: selection/ trains on "
                  "the training split and selects the epoch on validation (the newest 10% of the "
                  "training sessions); refit/ then trains the same configuration on all training "
                  "sessions for that many epochs, and that model is reported and exported. "
                  "selection: the first stage only, in --run_dir itself (with --train_on_valid: "
                  "one stage on all training sessions).")
flags.DEFINE_string("selection_from", None,
                    "--protocol=full: a finished selection stage's folder (its metrics.json and "
                    "config.json, e.g. a committed copy in results/) to refit from instead of "
                    "training the selection stage; its configuration must be this command's.")
flags.DEFINE_bool("print_config", False,
                  "Print the run's configuration as its config.json records it ({\"experiment\": "
                  "..., \"dataset\": ...}, one JSON line) and exit without training.")
flags.DEFINE_string("export_dir", None,
                    "Where the servable model is exported at the end (default: <run_dir>/export).")


def _overrides(cls: Type) -> Dict[str, Any]:
  return {f.name: FLAGS[f.name].value for f in dataclasses.fields(cls)
          if FLAGS[f.name].value is not None}


def config_from_flags(variant: Optional[str] = None) -> ExperimentConfig:
  """The effective configuration: preset, then variant (`--variant` unless given), then flags."""
  return build_config(FLAGS.dataset, variant or FLAGS.variant,
                      model_overrides=_overrides(ModelConfig),
                      train_overrides=_overrides(TrainConfig))
