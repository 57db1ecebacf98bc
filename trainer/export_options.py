"""Export settings shared by the trainer's and `serving.export`'s flags (no TensorFlow import)."""

from absl import flags

DEFAULT_MIN_RECALL = 0.99


def define_min_recall_flag(held_out: str) -> None:
  """Defines `--min_recall` (see `trainer.export`); `held_out` says which split it is measured
  on."""
  flags.DEFINE_float(
      "min_recall", DEFAULT_MIN_RECALL,
      "Recall@20 an approximate index (scann, portable_ann) must reach against exact search on "
      f"held-out sessions ({held_out}); its search breadth is tuned to the cheapest setting that "
      "does, and without one nothing is published (exit 2). 0: measure and record only.",
      lower_bound=0.0, upper_bound=1.0)
