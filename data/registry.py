"""The registry of datasets the project knows, and where each one's sessions come from.

Any other name is a dataset of your own: `<data_dir>/<name>/` holding the two files below
(`get_spec` returns a generic spec for it; the trainer uses the default preset).

A dataset is read, in this order of preference, from:
1. a folder of preprocessed sessions `<data_dir>/<name>/{train,test}_sessions.txt.gz` (the format of
   `../shared/data/README.md`), where `data_dir` is the `--data_dir` flag or, when that is not
   given, the environment variable `ATTENMIXER_DATA_DIR`;
2. the original raw file, found in `--raw_dir` or downloaded, and preprocessed with the dataset's
   published protocol (`data.protocols`);
3. for `synthetic`, a seeded generator (`data.synthetic`).
"""

import dataclasses
import functools
import os
import re
from typing import Callable, Dict, List, Optional, Tuple

from data.errors import DatasetNotFoundError

DATA_DIR_ENV = "ATTENMIXER_DATA_DIR"
DEFAULT_RAW_DIR = os.path.join(os.path.expanduser("~"), ".cache", "tfrs_attenmixer", "raw")
TRAIN_FILE = "train_sessions.txt.gz"
TEST_FILE = "test_sessions.txt.gz"

Sessions = List[List[int]]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the project knows about one dataset.

  Attributes:
    name: registry key, also the folder name under `data_dir`.
    protocol: the published preprocessing protocol the sessions follow.
    min_prefix_length: shortest session prefix that forms an example (see `data.examples`).
    raw_preprocessor: name of the function in `data.protocols` that turns the raw file into
      sessions, or None when no raw path exists (preprocessed files only).
    raw_kwargs: extra keyword arguments for `raw_preprocessor`.
  """
  name: str
  protocol: str
  min_prefix_length: int = 1
  raw_preprocessor: Optional[str] = None
  raw_kwargs: Tuple[Tuple[str, object], ...] = ()


DATASETS: Dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec("gowalla", "LESSR (Atten-Mixer's Gowalla)", raw_preprocessor="preprocess_gowalla"),
    DatasetSpec("lastfm", "LESSR (Atten-Mixer's Last.fm)", raw_preprocessor="preprocess_lastfm"),
    DatasetSpec("diginetica", "LESSR (Atten-Mixer's Diginetica)",
                raw_preprocessor="preprocess_diginetica_lessr"),
    DatasetSpec("diginetica_srgnn", "SR-GNN Diginetica",
                raw_preprocessor="preprocess_diginetica_srgnn"),
    DatasetSpec("yoochoose1_64", "SR-GNN Yoochoose 1/64", raw_preprocessor="preprocess_yoochoose",
                raw_kwargs=(("fraction", 64),)),
    DatasetSpec("yoochoose1_4", "SR-GNN Yoochoose 1/4", raw_preprocessor="preprocess_yoochoose",
                raw_kwargs=(("fraction", 4),)),
    DatasetSpec("retailrocket", "unknown (preprocessed files only)", min_prefix_length=2),
    DatasetSpec("synthetic", "seeded Markov-chain generator (data.synthetic)"),
]}


# The protocol of a dataset of your own (any unregistered name).
OWN_PROTOCOL = "your own preprocessed sessions"
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_registered(name: str) -> bool:
  return name in DATASETS


def get_spec(name: str) -> DatasetSpec:
  """The registered dataset `name`, or a dataset of your own read from `<data_dir>/<name>/`.

  Raises:
    ValueError: `name` cannot be a folder name (letters, digits, `_`, `.`, `-`).
  """
  if name in DATASETS:
    return DATASETS[name]
  if not _FOLDER_NAME.match(name):
    raise ValueError(f"dataset {name!r}: a dataset of your own is named by its folder under "
                     "--data_dir: letters, digits, '_', '.' and '-' only; registered datasets: "
                     f"{', '.join(sorted(DATASETS))}")
  return DatasetSpec(name, OWN_PROTOCOL)


def resolve_data_dir(flag_value: Optional[str]) -> Optional[str]:
  """The folder of preprocessed datasets: the flag if given, else `$ATTENMIXER_DATA_DIR`."""
  return flag_value or os.environ.get(DATA_DIR_ENV) or None


def preprocessed_folder(spec: DatasetSpec, data_dir: Optional[str]) -> Optional[str]:
  """The dataset's folder of preprocessed sessions under `data_dir`, if it is there."""
  if not data_dir:
    return None
  folder = os.path.join(data_dir, spec.name)
  return folder if os.path.isdir(folder) else None


@dataclasses.dataclass(frozen=True)
class SyntheticOptions:
  num_items: int = 1000
  num_sessions: int = 20000
  seed: int = 0


def load_sessions(spec: DatasetSpec,
                  data_dir: Optional[str] = None,
                  raw_dir: Optional[str] = None,
                  allow_download: bool = False,
                  synthetic: SyntheticOptions = SyntheticOptions()) -> Tuple[Sessions, Sessions, str]:
  """Returns `(train_sessions, test_sessions, source_description)` for a dataset.

  Raises:
    data.errors.DatasetNotFoundError: with what to provide, when no source is available.
    data.errors.DataFormatError: when a file is malformed (names the file and line).
  """
  if spec.name == "synthetic":
    from data import synthetic as generator  # pylint: disable=g-import-not-at-top
    sessions = generator.generate_sessions(synthetic.num_items, synthetic.num_sessions,
                                           synthetic.seed)
    cut = int(round(0.8 * len(sessions)))
    return sessions[:cut], sessions[cut:], f"synthetic {dataclasses.asdict(synthetic)}"

  folder = None if raw_dir else preprocessed_folder(spec, data_dir)
  if folder:
    from data.session_files import read_sessions  # pylint: disable=g-import-not-at-top
    for file_name in (TRAIN_FILE, TEST_FILE):
      if not os.path.isfile(os.path.join(folder, file_name)):
        raise DatasetNotFoundError(
            f"{folder} is a folder of preprocessed sessions but has no {file_name}; expected "
            f"{TRAIN_FILE} and {TEST_FILE} (format: one session per line, ids separated by spaces)")
    return (read_sessions(os.path.join(folder, TRAIN_FILE)),
            read_sessions(os.path.join(folder, TEST_FILE)), f"preprocessed files in {folder}")

  if not is_registered(spec.name):
    raise DatasetNotFoundError(
        f"dataset {spec.name!r} is not registered (registered: {', '.join(sorted(DATASETS))}), "
        f"so it is read from <data_dir>/{spec.name}/ with {TRAIN_FILE} and {TEST_FILE} (one "
        "session per line, item ids separated by spaces): no such folder (looked in: "
        f"{data_dir or 'no data_dir given: pass --data_dir or set ' + DATA_DIR_ENV})")
  if spec.raw_preprocessor is None:
    raise DatasetNotFoundError(
        f"dataset {spec.name!r} exists only as preprocessed files: put {TRAIN_FILE} and "
        f"{TEST_FILE} in <data_dir>/{spec.name}/ and pass --data_dir=<data_dir> or set "
        f"{DATA_DIR_ENV}={'<data_dir>'} (looked in: {data_dir or 'no data_dir given'})")
  from data import download, protocols  # pylint: disable=g-import-not-at-top
  raw_path = download.locate_or_download(spec.name, raw_dir or DEFAULT_RAW_DIR,
                                         allow_download=allow_download)
  preprocess: Callable = functools.partial(getattr(protocols, spec.raw_preprocessor),
                                           **dict(spec.raw_kwargs))
  split = preprocess(raw_path)
  return split.train, split.test, f"raw file {raw_path} ({spec.protocol} protocol)"
