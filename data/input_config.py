"""Settings of the tf.data input pipeline (`data.pipeline`); importable without TensorFlow."""

import dataclasses

SHARD_POLICIES = ("auto", "file", "data")


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
  """
  batch_size: int = 100
  max_length: int = 20
  shuffle_buffer: int = 100_000
  sessions_per_parse: int = 512
  cycle_length: int = 4
  shard_policy: str = "auto"

  def __post_init__(self):
    if self.shard_policy not in SHARD_POLICIES:
      raise ValueError(f"shard_policy must be one of {SHARD_POLICIES}, got {self.shard_policy!r}")
    for name in ("batch_size", "max_length", "shuffle_buffer", "sessions_per_parse",
                 "cycle_length"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
