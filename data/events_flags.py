"""Command-line flags of an event-log import (`python -m data.prepare --events=FILE`).

One flag per field of `data.events_config.EventsConfig`, of the same name and help text, plus
`--events` (the file), `--events_preset` and the resources of `ImportResources`. A
flag that is not given keeps the preset's value, or the field's default. Importing this module
defines the flags; only `data.prepare`'s command imports it.
"""

import dataclasses
from typing import Tuple

from absl import flags

from data.events_config import PRESETS, EventsConfig, ImportResources, from_preset
from tfrs_attenmixer.config import option_help

FLAGS = flags.FLAGS
_NOT_FLAGS = ("path", "preset")  # --events and --events_preset


def _define_fields() -> None:
  helps = option_help(EventsConfig)
  for field in dataclasses.fields(EventsConfig):
    if field.name in _NOT_FLAGS:
      continue
    text = f"--events: {helps[field.name]} (default: {field.default!r}, or the preset's)"
    if field.type == Tuple[str, ...]:
      flags.DEFINE_list(field.name, None, text)
    else:
      define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                str: flags.DEFINE_string}[field.type]
      define(field.name, None, text)


flags.DEFINE_string("events", None, "Import the dataset from this event log (CSV, TSV, either "
                    "gzip-compressed, or Parquet): one row per event with a session (or user) id, "
                    "an item id and a time; see data/README.md. --dataset names the result.")
flags.DEFINE_enum("events_preset", None, sorted(PRESETS),
                  "--events: a published protocol's options for its raw file (flags given "
                  "override them): " + "; ".join(f"{name}: {preset.protocol}"
                                                 for name, preset in sorted(PRESETS.items())))
_MB = 1 << 20
flags.DEFINE_float("events_chunk_mb", ImportResources.chunk_bytes / _MB,
                   "--events: megabytes of the log read at a time (pyarrow reads up to 32 such "
                   "blocks of a CSV/TSV file ahead).")
flags.DEFINE_float("events_memory_mb", ImportResources.memory_bytes / _MB,
                   "--events: memory budget that sets the size of the temporary partitions and "
                   "buckets (megabytes; the process also holds the item catalogue, the read-ahead "
                   "and TensorFlow's writer).")
flags.DEFINE_string("events_temp_dir", None, "--events: folder for the temporary files "
                    "(removed at the end); default: --output_dir.")
_define_fields()


def events_config_from_flags() -> EventsConfig:
  """The `EventsConfig` of the parsed flags.

  Raises:
    ValueError: a missing or contradictory option (naming its flag).
  """
  given = {field.name: FLAGS[field.name].value for field in dataclasses.fields(EventsConfig)
           if field.name not in _NOT_FLAGS and FLAGS[field.name].present}
  if "column_names" in given:
    given["column_names"] = tuple(given["column_names"])
  if FLAGS.events_preset:
    return from_preset(FLAGS.events_preset, FLAGS.events, **given)
  return EventsConfig(path=FLAGS.events, **given)


def import_resources_from_flags() -> ImportResources:
  """The `ImportResources` of the parsed flags."""
  if FLAGS.events_chunk_mb <= 0 or FLAGS.events_memory_mb <= 0:
    raise ValueError("--events_chunk_mb and --events_memory_mb must be > 0")
  return ImportResources(chunk_bytes=int(FLAGS.events_chunk_mb * _MB),
                         memory_bytes=int(FLAGS.events_memory_mb * _MB),
                         temp_dir=FLAGS.events_temp_dir)
