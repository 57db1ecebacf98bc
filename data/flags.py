"""Command-line flags that choose and prepare a dataset, shared by `data.prepare` and the trainer.

Importing this module defines the flags (absl's global `FLAGS`); only commands import it.
"""

from absl import flags

from data import registry
from data.prepare_config import PrepareConfig

flags.DEFINE_string(
    "dataset", "gowalla",
    f"Dataset: a registered one ({', '.join(sorted(registry.DATASETS))}), or the name of a "
    f"folder of your own under --data_dir holding {registry.TRAIN_FILE} and "
    f"{registry.TEST_FILE} (one session per line, item ids separated by spaces).")
flags.DEFINE_string(
    "data_dir", None,
    f"Folder of preprocessed datasets (<data_dir>/<dataset>/train_sessions.txt.gz, "
    f"test_sessions.txt.gz). Default: ${registry.DATA_DIR_ENV}.")
flags.DEFINE_string(
    "raw_dir", None,
    "Folder of raw dataset files. When given, the dataset is preprocessed from its raw file "
    "(downloaded into this folder if missing and --download is set).")
flags.DEFINE_bool("download", True, "Download missing raw files (needs internet).")
flags.DEFINE_string("output_dir", "prepared", "Where prepared datasets (TFRecord) are written.")
flags.DEFINE_bool("overwrite", False, "Replace an existing prepared dataset.")
flags.DEFINE_integer("num_shards", 8, "Number of TFRecord shards of the training split.")
flags.DEFINE_float("validation_fraction", 0.1,
                   "Most recent fraction of training sessions used for model selection.")
flags.DEFINE_integer("synthetic_items", 1000, "synthetic dataset: number of items.")
flags.DEFINE_integer("synthetic_sessions", 20000, "synthetic dataset: number of sessions.")
flags.DEFINE_integer("synthetic_seed", 0, "synthetic dataset: generator seed.")

FLAGS = flags.FLAGS


def prepare_config_from_flags() -> PrepareConfig:
  """The `PrepareConfig` the parsed flags ask for."""
  return PrepareConfig(
      dataset=FLAGS.dataset,
      validation_fraction=FLAGS.validation_fraction,
      num_shards=FLAGS.num_shards,
      synthetic=registry.SyntheticOptions(FLAGS.synthetic_items, FLAGS.synthetic_sessions,
                                          FLAGS.synthetic_seed))
