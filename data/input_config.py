"""Settings of the tf.data input pipeline (`data.pipeline`); importable without TensorFlow."""

import dataclasses

SHARD_POLICIES = ("auto", "file", "data")
TRAIN_ORDERS = ("shuffled", "chronological")


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """Input pipeline settings.

  Attributes:
    batch_size: global batch size (split evenly over replicas under a strategy).
    max_length: most recent items kept per prefix.
    shuffle_buffer: examples in the shuffle buffer (training only).
    sessions_per_parse: sessions parsed and expanded together (vectorisation width).
    cycle_length: files read in parallel.
    shard_policy: "auto", "file" or "data" (see the module doc).
    train_order: order of the training examples: "chronological" (the time order of the
      sessions, every epoch the same, so each epoch ends on the most recent sessions; the authors'
      code reads its training file in order) or "shuffled" (a seeded shuffle per epoch).
      Chronological is the default because validation favours it (results/README.md).
    length_multiple: 0 keeps every batch `max_length` items wide; k > 0 cuts each batch's left
      padding down to its longest session rounded up to a multiple of k (at most `max_length`),
      so a batch of short sessions costs less and at most `ceil(max_length / k)` widths occur.
      Only for models whose output does not depend on the amount of padding.
  """
  batch_size: int = 100
  max_length: int = 20
  shuffle_buffer: int = 100_000
  sessions_per_parse: int = 512
  cycle_length: int = 4
  shard_policy: str = "auto"
  train_order: str = "chronological"
  length_multiple: int = 0

  def __post_init__(self):
    if self.shard_policy not in SHARD_POLICIES:
      raise ValueError(f"shard_policy must be one of {SHARD_POLICIES}, got {self.shard_policy!r}")
    if self.train_order not in TRAIN_ORDERS:
      raise ValueError(f"train_order must be one of {TRAIN_ORDERS}, got {self.train_order!r}")
    for name in ("batch_size", "max_length", "shuffle_buffer", "sessions_per_parse",
                 "cycle_length"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.length_multiple < 0:
      raise ValueError(f"length_multiple must be >= 0, got {self.length_multiple}")
