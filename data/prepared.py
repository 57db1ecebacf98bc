"""A prepared dataset on disk: TFRecord shards per split, the vocabulary, a manifest and stats.

Layout of `<output_dir>/<dataset>/` (written by `python -m data.prepare`):

    manifest.json      format version, dataset, min prefix length, number of items, and per split
                       the shard files with their session counts and sha256
    stats.json         counts: sessions, examples, clicks, items, average length per split
    vocab.txt          raw item ids (see `data.vocabulary`)
    {train,valid,test}-NNNNN-of-NNNNN.tfrecord

`train` and `valid` are carved from the published training sessions (`valid` = the most recent
fraction by time order); `test` is the published test set, never used for model selection. The
split name `"train+valid"` (`ALL_TRAINING`) stands for both, in time order: all the published
training sessions.
"""

import dataclasses
import hashlib
import json
import os
from typing import Dict, List

from data.errors import DataFormatError
from data.vocabulary import VOCABULARY_FILE, Vocabulary

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
STATS_FILE = "stats.json"
SPLITS = ("train", "valid", "test")
ALL_TRAINING = "train+valid"


def file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as data:
    for block in iter(lambda: data.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class PreparedDataError(DataFormatError):
  """A prepared dataset folder is missing files or its files do not match the manifest."""


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
  """A loaded `manifest.json` with helpers to find the split files."""
  directory: str
  manifest: Dict

  @property
  def name(self) -> str:
    return self.manifest["dataset"]

  @property
  def num_items(self) -> int:
    """N: item indices are 1..N; embedding tables need N + 1 rows."""
    return self.manifest["num_items"]

  @property
  def min_prefix_length(self) -> int:
    return self.manifest["min_prefix_length"]

  def _entries(self, split: str) -> List[Dict]:
    """The shard entries of a split, or of splits joined by "+" (in that order)."""
    return [entry for part in split.split("+") for entry in self.manifest["splits"][part]]

  def files(self, split: str) -> List[str]:
    return [os.path.join(self.directory, entry["file"]) for entry in self._entries(split)]

  def num_sessions(self, split: str) -> int:
    return sum(entry["sessions"] for entry in self._entries(split))

  def num_examples(self, split: str) -> int:
    return sum(entry["examples"] for entry in self._entries(split))

  def shard_examples(self, split: str) -> List[int]:
    return [entry["examples"] for entry in self._entries(split)]

  def stats(self) -> Dict:
    with open(os.path.join(self.directory, STATS_FILE)) as stats:
      return json.load(stats)

  def vocabulary(self) -> Vocabulary:
    return Vocabulary.load(os.path.join(self.directory, VOCABULARY_FILE))

  def verify(self) -> None:
    """Checks every shard against the manifest (exists, same sha256); names the bad file."""
    for split in SPLITS:
      for entry in self.manifest["splits"][split]:
        path = os.path.join(self.directory, entry["file"])
        if not os.path.isfile(path):
          raise PreparedDataError(path, None, f"shard listed in {MANIFEST_FILE} is missing; "
                                  "re-run `python -m data.prepare --overwrite`")
        if file_sha256(path) != entry["sha256"]:
          raise PreparedDataError(path, None, "shard is corrupt (its sha256 differs from "
                                  f"{MANIFEST_FILE}); re-run `python -m data.prepare --overwrite`")

  @classmethod
  def load(cls, directory: str, verify: bool = True) -> "PreparedDataset":
    """Loads and (by default) verifies a prepared dataset folder."""
    path = os.path.join(directory, MANIFEST_FILE)
    if not os.path.isfile(path):
      raise PreparedDataError(path, None, "not a prepared dataset (no manifest); run "
                              "`python -m data.prepare --dataset=NAME --output_dir=...` first")
    try:
      with open(path) as manifest_file:
        manifest = json.load(manifest_file)
    except json.JSONDecodeError as error:
      raise PreparedDataError(path, error.lineno, f"invalid JSON: {error.msg}") from None
    missing = {"format_version", "dataset", "num_items", "min_prefix_length", "splits"} - set(manifest)
    if missing:
      raise PreparedDataError(path, None, f"manifest lacks the fields {sorted(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
      raise PreparedDataError(path, None, f"format version {manifest['format_version']} is not "
                              f"{FORMAT_VERSION}; re-run `python -m data.prepare --overwrite`")
    for file_name in (STATS_FILE, VOCABULARY_FILE):
      if not os.path.isfile(os.path.join(directory, file_name)):
        raise PreparedDataError(os.path.join(directory, file_name), None, "missing")
    dataset = cls(directory, manifest)
    if verify:
      dataset.verify()
    return dataset
