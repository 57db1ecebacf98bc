"""Imports an event log with the Apache Beam pipeline of `data.events_beam`.

    python -m data.prepare_beam --dataset=NAME --events=FILE [data.prepare's import flags]
        [--rounds_per_pipeline=N] [--read_part_mb=M]
        [Beam pipeline options, e.g. --runner=DirectRunner]

The flags are `data.prepare`'s (`data.flags`, `data.events_flags`: the same options, presets and
defaults), and the folder is the one `python -m data.prepare --events=FILE` writes, byte for
byte. Every other argument goes to Beam's `PipelineOptions`: `--runner` (DirectRunner by
default; DataflowRunner, FlinkRunner, SparkRunner, ...) and that runner's options (`--project`,
`--region`, `--temp_location`, `--setup_file`, `--flink_master`, ...). An argument that is
neither a flag of this command nor a Beam pipeline option is an error: Beam itself would drop it
with a warning.

Exit codes: 0 done, 2 bad input or options (as `data.prepare` for an import).
"""

import functools
import sys
from typing import List, Sequence

from absl import app
from absl import flags

from data import prepare
from tfrs_attenmixer import console

FLAGS = flags.FLAGS


def unknown_pipeline_args(args: Sequence[str]) -> List[str]:
  """The arguments of `args` that no Beam pipeline option takes."""
  # pylint: disable=g-import-not-at-top,protected-access  (Beam parses its options this way)
  from apache_beam.options import pipeline_options
  parser = pipeline_options._BeamArgumentParser(allow_abbrev=False)
  for options in pipeline_options.PipelineOptions.__subclasses__():
    options._add_argparse_args(parser)
  _, unknown = parser.parse_known_args(list(args))
  return unknown


def main(argv: List[str]) -> int:
  """`python -m data.prepare_beam`: `data.prepare`'s import, run by `data.events_beam`."""
  pipeline_args = argv[1:]
  unknown = unknown_pipeline_args(pipeline_args)
  problem = None
  if unknown:
    problem = (f"unknown arguments {' '.join(unknown)}: neither flags of data.prepare_beam nor "
               "Beam pipeline options")
  elif FLAGS.events is None and FLAGS.events_preset is None:
    problem = "--events: name the event log to import"
  elif FLAGS.rounds_per_pipeline < 1 or FLAGS.read_part_mb <= 0:
    problem = "--rounds_per_pipeline must be >= 1 and --read_part_mb > 0"
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return prepare.EXIT_EVENTS_ERROR
  from data import events_beam  # pylint: disable=g-import-not-at-top  (imports Beam)
  return prepare.main(argv[:1], importer=functools.partial(
      events_beam.import_events, pipeline_args=pipeline_args,
      rounds_per_pipeline=FLAGS.rounds_per_pipeline,
      part_bytes=max(1, int(FLAGS.read_part_mb * (1 << 20)))))


if __name__ == "__main__":
  # pylint: disable=g-import-not-at-top,unused-import
  from data import events_flags as _events_flags  # noqa: F401
  from data import flags as _data_flags  # noqa: F401
  from data.events_beam import DEFAULT_PART_BYTES, DEFAULT_ROUNDS_PER_PIPELINE
  flags.DEFINE_integer("rounds_per_pipeline", DEFAULT_ROUNDS_PER_PIPELINE,
                       "--filter_until_stable: rounds of the filters one pipeline holds; while "
                       "the last still removes something, another pipeline runs the next ones "
                       "(data/events_beam.py). Does not change the result.")
  flags.DEFINE_float("read_part_mb", DEFAULT_PART_BYTES / (1 << 20),
                     "Megabytes of the log one worker reads (Parquet: whole row groups; plain "
                     "CSV/TSV: whole lines; a gzip file is read whole). Does not change the "
                     "result.")
  console.start_tensorflow()
  app.run(main, flags_parser=lambda argv: FLAGS(argv, known_only=True))
