"""The files of a prepared dataset folder besides its shards (`stats.json`, `vocab.txt`,
`manifest.json`), shared by the two writers: `data.prepare` (sessions in memory) and
`data.events` (sessions streamed from an event log). `data.prepared` describes the layout.
"""

import dataclasses
import json
import os
from typing import Dict, Iterable, List

import numpy as np

from data.atomic import atomic_output
from data.prepare_config import PrepareConfig
from data.prepared import FORMAT_VERSION, MANIFEST_FILE, STATS_FILE
from data.registry import DatasetSpec
from data.vocabulary import VOCABULARY_FILE, Vocabulary


@dataclasses.dataclass
class SplitCounts:
  """Running counts of one split's sessions; examples are prefixes of >= `min_prefix_length`."""
  min_prefix_length: int
  sessions: int = 0
  clicks: int = 0
  examples: int = 0

  def add(self, lengths: Iterable[int]) -> "SplitCounts":
    """Counts sessions of these lengths (a sequence, or an int array `[sessions]`)."""
    lengths = np.asarray(lengths if isinstance(lengths, np.ndarray) else list(lengths), np.int64)
    self.sessions += len(lengths)
    self.clicks += int(lengths.sum())
    self.examples += int(np.maximum(lengths - self.min_prefix_length, 0).sum())
    return self

  def add_one(self, length: int) -> None:
    """Counts one session of `length` items."""
    self.sessions += 1
    self.clicks += length
    self.examples += max(length - self.min_prefix_length, 0)

  def __add__(self, other: "SplitCounts") -> "SplitCounts":
    return SplitCounts(self.min_prefix_length, self.sessions + other.sessions,
                       self.clicks + other.clicks, self.examples + other.examples)

  def as_dict(self) -> Dict:
    return {"sessions": self.sessions, "examples": self.examples, "clicks": self.clicks,
            "average_length": round(self.clicks / max(self.sessions, 1), 4)}


def stats_from_counts(train: SplitCounts, valid: SplitCounts, test: SplitCounts,
                      num_items: int, items_in_train: int) -> Dict:
  """Counts per split, and the paper's Table 1 figures over the published train + test sets.

  Args:
    train, valid, test: the splits' counts (`valid` is carved from the published training set).
    num_items: the vocabulary's size N.
    items_in_train: the items of the published training set (train + valid).
  """
  published_train = train + valid
  table1 = (published_train + test).as_dict()
  return {
      "table1": {
          "clicks": table1["clicks"],
          "examples": table1["examples"],
          "items": items_in_train,
          "average_length": round(table1["average_length"], 2),
      },
      "num_items": num_items,
      "items_in_train": items_in_train,
      "test_items_not_in_train": num_items - items_in_train,
      "splits": {
          "published_train": published_train.as_dict(),
          "train": train.as_dict(),
          "valid": valid.as_dict(),
          "test": test.as_dict(),
      },
  }


def num_validation(num_train: int, fraction: float) -> int:
  """How many of the newest training sessions become validation (`round(fraction * n)`, >= 1).

  Raises:
    ValueError: too few sessions to leave any for training.
  """
  count = max(1, int(round(fraction * num_train)))
  if count >= num_train:
    raise ValueError(f"{num_train} training sessions are too few to carve a validation split")
  return count


def write_json(path: str, content: Dict) -> None:
  with atomic_output(path) as temporary:
    with open(temporary, "w") as out:
      json.dump(content, out, indent=1)


def write_folder_files(directory: str, config: PrepareConfig, spec: DatasetSpec,
                       vocabulary: Vocabulary, stats: Dict, shards: Dict[str, List[Dict]]) -> None:
  """Writes `vocab.txt`, `stats.json` and `manifest.json` beside the shards in `directory`.

  Args:
    directory: the (temporary) folder holding the shards.
    config: recorded in the manifest (a folder is reused only for the same configuration).
    spec: the dataset.
    vocabulary: the item vocabulary.
    stats: `stats_from_counts`' figures with the dataset's description.
    shards: per split, the manifest entries of `data.tfrecord.write_shards`.
  """
  vocabulary.save(os.path.join(directory, VOCABULARY_FILE))
  write_json(os.path.join(directory, STATS_FILE), stats)
  write_json(os.path.join(directory, MANIFEST_FILE), {
      "format_version": FORMAT_VERSION,
      "dataset": spec.name,
      "num_items": vocabulary.size,
      "min_prefix_length": spec.min_prefix_length,
      "config": dataclasses.asdict(config),
      "splits": shards,
  })
