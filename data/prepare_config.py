"""What determines the content of a prepared dataset folder (`data.prepare`).

`PrepareConfig` is recorded in the folder's manifest (`config`); a folder is reused only for the
same configuration, except that a configuration naming no event log (`events` None, as the
trainer's) takes a folder imported from one as it is. It is built by `data.prepare`'s callers,
from code or from the command-line flags (`data.flags.prepare_config_from_flags`, and
`data.events_flags.events_config_from_flags` for an import).
"""

import dataclasses
from typing import Optional

from data import registry
from data.events_config import EventsConfig


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """Everything that determines the content of a prepared dataset folder.

  Raises:
    ValueError: on construction, for an unknown dataset, a `validation_fraction` outside (0, 1)
      or fewer than one shard.
  """
  dataset: str
  validation_fraction: float = 0.1
  num_shards: int = 8
  synthetic: registry.SyntheticOptions = registry.SyntheticOptions()
  events: Optional[EventsConfig] = None  # sessions imported from an event log (`data.events`)

  def __post_init__(self):
    registry.get_spec(self.dataset)
    if not 0.0 < self.validation_fraction < 1.0:
      raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
    if self.num_shards < 1:
      raise ValueError(f"num_shards must be >= 1, got {self.num_shards}")
