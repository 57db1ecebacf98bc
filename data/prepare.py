"""Prepares a dataset for training: sessions -> vocabulary -> train/valid/test TFRecord shards.

    python -m data.prepare --dataset=gowalla [--data_dir=...] [--output_dir=prepared]
    python -m data.prepare --dataset=NAME --events=FILE [--events_preset=...] [import options]

Reads the dataset from its preprocessed files, its raw file or the synthetic generator (see
`data.registry`), or imports it from an event log (`--events`, `data.events`), carves the
validation split from the most recent training sessions, writes the shards, `vocab.txt`,
`stats.json` and `manifest.json` into a temporary folder and renames it to
`<output_dir>/<dataset>` when everything is written. A folder prepared earlier with the same
configuration is reused as it is (a command naming no event log, as the trainer's, reuses a
folder imported from one).

Exit codes: 0 done, 1 bad input or options of the other sources, 2 bad input or options of an
event-log import (`EventLogError` names the file, column and row, or the filter that left
nothing).
"""

import dataclasses
import json
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from data import registry
from data.atomic import atomic_directory
from data.errors import DataFormatError, DatasetNotFoundError, EventLogError
from data.events_config import ImportResources
from data.prepare_config import PrepareConfig
from data.prepared import PreparedDataError, PreparedDataset
from data.prepared_output import SplitCounts, num_validation, stats_from_counts, write_folder_files
from data.vocabulary import Vocabulary
from tfrs_attenmixer import console

EXIT_ERROR = 1
EXIT_EVENTS_ERROR = 2


def compute_stats(train: Sequence[Sequence[int]], valid: Sequence[Sequence[int]],
                  test: Sequence[Sequence[int]], vocabulary: Vocabulary,
                  min_prefix_length: int) -> Dict:
  """Counts per split, and the paper's Table 1 figures over the published train + test sets."""
  counts = [SplitCounts(min_prefix_length).add(map(len, split)) for split in (train, valid, test)]
  items_in_train = len({item for split in (train, valid) for session in split for item in session})
  return stats_from_counts(*counts, vocabulary.size, items_in_train)


def split_validation(train: List, fraction: float):
  """The most recent `fraction` of the (time-ordered) training sessions become validation."""
  num_valid = num_validation(len(train), fraction)
  return train[:-num_valid], train[-num_valid:]


def _reusable(directory: str, config: PrepareConfig) -> Optional[PreparedDataset]:
  """The prepared dataset in `directory` if it is complete and made with `config`.

  Raises:
    PreparedDataError: `directory` holds something else; the message says what differs.
  """
  if not os.path.exists(directory) or not os.listdir(directory):
    return None
  dataset = PreparedDataset.load(directory)
  wanted = json.loads(json.dumps(dataclasses.asdict(config)))
  found = dataset.manifest.get("config", {})
  if config.events is None and found.get("events"):
    logging.info("%s was imported from the event log %s", directory, found["events"]["path"])
    del wanted["events"]  # a command naming no source takes the imported sessions
  differences = [f"{key}: {found.get(key)!r} there, {wanted[key]!r} asked"
                 for key in wanted if found.get(key) != wanted[key]]
  if differences:
    raise PreparedDataError(directory, None, "was prepared with another configuration ("
                            + "; ".join(differences) + "); pass --overwrite to replace it, or "
                            "another --output_dir")
  return dataset


def prepare(config: PrepareConfig, output_dir: str, data_dir: Optional[str] = None,
            raw_dir: Optional[str] = None, allow_download: bool = True,
            overwrite: bool = False,
            resources: Optional[ImportResources] = None,
            importer: Optional[Callable] = None) -> PreparedDataset:
  """Prepares `config.dataset` into `<output_dir>/<dataset>` and returns it (see module doc).

  Args:
    resources: how an event-log import (`config.events`) runs (chunk size, memory budget,
      temporary folder); None for the defaults.
    importer: the function that imports an event log, called as `importer(config, spec,
      directory, resources)`; None for the chunked importer `data.events.import_events` (the
      Beam pipeline, `data.events_beam.import_events`, writes the same folder).

  Raises:
    DataFormatError: bad input (`EventLogError` for an event log).
    DatasetNotFoundError: no source of the dataset.
    ValueError: options that contradict each other.
    PreparedDataError: the folder holds another configuration (and `overwrite` is False).
  """
  spec = registry.get_spec(config.dataset)
  directory = os.path.join(output_dir, spec.name)
  if not overwrite:
    existing = _reusable(directory, config)
    if existing:
      logging.info("Reusing the prepared dataset in %s", directory)
      return existing
  if config.events is not None:
    if importer is None:
      from data import events  # pylint: disable=g-import-not-at-top  (imports pyarrow)
      importer = events.import_events
    importer(config, spec, directory, resources or ImportResources())
    return PreparedDataset.load(directory)

  train, test, source = registry.load_sessions(spec, data_dir=data_dir, raw_dir=raw_dir,
                                               allow_download=allow_download,
                                               synthetic=config.synthetic)
  logging.info("Read %d training and %d test sessions from %s", len(train), len(test), source)
  vocabulary = Vocabulary.from_sessions(train, test)
  train, test = vocabulary.encode(train), vocabulary.encode(test)
  train, valid = split_validation(train, config.validation_fraction)
  stats = compute_stats(train, valid, test, vocabulary, spec.min_prefix_length)
  stats.update({"dataset": spec.name, "protocol": spec.protocol, "source": source,
                "validation_fraction": config.validation_fraction})

  from data.tfrecord import write_shards  # pylint: disable=g-import-not-at-top  (imports TF)
  with atomic_directory(directory) as temporary:
    # Evaluation splits are small; two shards keep file-based sharding possible for 2 workers.
    shards = {split: write_shards(sessions, temporary, split,
                                  config.num_shards if split == "train" else min(2, config.num_shards),
                                  spec.min_prefix_length)
              for split, sessions in (("train", train), ("valid", valid), ("test", test))}
    write_folder_files(temporary, config, spec, vocabulary, stats, shards)
  return PreparedDataset.load(directory)


def format_stats(stats: Dict) -> str:
  """A readable summary, with the paper's Table 1 row first."""
  t1 = stats["table1"]
  lines = [f"{stats['dataset']}: {stats['source']}",
           f"  Table 1: clicks {t1['clicks']:,}  examples {t1['examples']:,}  items {t1['items']:,}"
           f"  average length {t1['average_length']:.2f}"]
  for split, counts in stats["splits"].items():
    lines.append(f"  {split:>15}: {counts['sessions']:>9,} sessions {counts['examples']:>10,} "
                 f"examples {counts['clicks']:>10,} clicks")
  lines.append(f"  catalogue: {stats['num_items']:,} items "
               f"({stats['test_items_not_in_train']:,} only in test)")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def main(argv, importer: Optional[Callable] = None) -> int:
  """`python -m data.prepare`: prepares the dataset its flags (`data.flags`, and
  `data.events_flags` for an import) ask for; an import with `importer` (see `prepare`)."""
  del argv
  # pylint: disable=g-import-not-at-top  (see __main__)
  from data import events_flags
  from data import flags as data_flags
  importing = FLAGS.events is not None or FLAGS.events_preset is not None
  try:
    if importing and not FLAGS["dataset"].present:
      raise ValueError("--events: name the dataset it becomes with --dataset=NAME")
    config = data_flags.prepare_config_from_flags()
    if importing:
      config = dataclasses.replace(config, events=events_flags.events_config_from_flags())
    dataset = prepare(config, FLAGS.output_dir,
                      data_dir=registry.resolve_data_dir(FLAGS.data_dir), raw_dir=FLAGS.raw_dir,
                      allow_download=FLAGS.download, overwrite=FLAGS.overwrite,
                      resources=events_flags.import_resources_from_flags() if importing else None,
                      importer=importer)
  except (DataFormatError, DatasetNotFoundError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return EXIT_EVENTS_ERROR if importing or isinstance(error, EventLogError) else EXIT_ERROR
  print(format_stats(dataset.stats()))
  print(f"written to {dataset.directory}")
  return 0


if __name__ == "__main__":
  # The command defines its flags before they are parsed; importing this module defines none.
  # pylint: disable=g-import-not-at-top,unused-import
  from data import events_flags as _events_flags  # noqa: F401
  from data import flags as _data_flags  # noqa: F401
  console.start_tensorflow()  # before absl's start, which initialises the devices
  app.run(main)
