"""The item vocabulary: raw item ids <-> contiguous indices, index 0 reserved for padding.

Stored as `vocab.txt`, one raw id per line, where line `i` (0-based) holds the raw id of index `i`
and line 0 is the padding token. That layout lets serving build its lookup table straight from the
file (`tf.lookup.TextFileInitializer` with the line number as the value).
"""

import dataclasses
from typing import Dict, Iterable, List, Sequence

from data.atomic import atomic_output
from data.errors import DataFormatError

PADDING_TOKEN = "<pad>"
VOCABULARY_FILE = "vocab.txt"


def _sort_key(raw_id: str):
  return (0, int(raw_id), "") if raw_id.isdigit() else (1, 0, raw_id)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Raw item ids in index order; `raw_ids[i - 1]` is the raw id of index `i` (i >= 1)."""
  raw_ids: Sequence[str]

  @classmethod
  def from_sessions(cls, train: Iterable[Iterable], test: Iterable[Iterable]) -> "Vocabulary":
    """Training items first, then items that occur only in the test sessions.

    Numeric ids are sorted numerically, so ids that are already `1..N` map to themselves.
    Test-only items stay in the catalogue (they are ranked, as in SR-GNN's evaluation), but they
    are never seen in training.
    """
    return cls.from_ids((str(item) for session in train for item in session),
                        (str(item) for session in test for item in session))

  @classmethod
  def from_ids(cls, train_ids: Iterable[str], test_ids: Iterable[str]) -> "Vocabulary":
    """The ids of the training items, then the other test ids, each sorted as `from_sessions`."""
    train_ids = set(train_ids)
    test_only = set(test_ids) - train_ids
    return cls(tuple(sorted(train_ids, key=_sort_key) + sorted(test_only, key=_sort_key)))

  @property
  def size(self) -> int:
    """Number of real items N (indices 1..N); the embedding table needs N + 1 rows."""
    return len(self.raw_ids)

  def index_of(self) -> Dict[str, int]:
    return {raw: index for index, raw in enumerate(self.raw_ids, start=1)}

  def encode(self, sessions: Iterable[Iterable]) -> List[List[int]]:
    """Maps sessions of raw ids to indices; every id must be in the vocabulary."""
    lookup = self.index_of()
    return [[lookup[str(item)] for item in session] for session in sessions]

  def save(self, path: str) -> None:
    with atomic_output(path) as temporary:
      with open(temporary, "w") as out:
        out.write(PADDING_TOKEN + "\n")
        for raw in self.raw_ids:
          out.write(raw + "\n")

  @classmethod
  def load(cls, path: str) -> "Vocabulary":
    try:
      with open(path) as lines:
        rows = lines.read().split("\n")
    except OSError as error:
      raise DataFormatError(path, None, f"cannot read the vocabulary: {error.strerror}") from None
    if rows and rows[-1] == "":
      rows.pop()
    if not rows or rows[0] != PADDING_TOKEN:
      raise DataFormatError(path, 1, f"the first line must be the padding token {PADDING_TOKEN!r}")
    seen = set()
    for line_number, raw in enumerate(rows[1:], start=2):
      if not raw or raw in seen or raw == PADDING_TOKEN:
        raise DataFormatError(path, line_number, f"empty or repeated item id {raw!r}")
      seen.add(raw)
    return cls(tuple(rows[1:]))
