"""Where each dataset's raw file comes from, and finding (or downloading) it in a raw-data folder.

`locate_or_download(name, raw_dir)` returns the raw file the dataset's preprocessor in
`data.protocols` reads. It looks in `raw_dir` for the file, plain or gzip-compressed; for Last.fm
also for the unpacked archive folder, or the archive itself (which it unpacks). Only Gowalla and
Last.fm have a direct download address; Diginetica (registration) and Yoochoose (a 7-Zip archive,
which `tf.keras.utils.get_file` cannot unpack) must be fetched by hand: the error says which file to
get, from where, and where to put it. No source publishes a checksum, so downloads are unverified
(`RawSource.file_hash` is None); the preprocessors reject truncated or corrupt files.
"""

import dataclasses
import os
import shutil
import tarfile
from typing import Dict, List, Optional

from absl import logging

from data.atomic import atomic_output
from data.errors import DatasetNotFoundError


@dataclasses.dataclass(frozen=True)
class RawSource:
  """Where one raw file comes from.

  Attributes:
    file_name: the file the preprocessor reads (also found with `.gz` added, or removed).
    url: direct download address, or None when the file must be downloaded by hand.
    instructions: how to get the file by hand, and its terms of use.
    archive_name: when `url` is an archive: its file name; `file_name` is inside it, in the folder
      `member_dir`.
    member_dir: the folder of `file_name` inside the archive.
    file_hash: sha256 of the download, when known (None: no source publishes one).
  """
  file_name: str
  url: Optional[str]
  instructions: str
  archive_name: Optional[str] = None
  member_dir: str = ""
  file_hash: Optional[str] = None


_GOWALLA = RawSource(
    file_name="loc-gowalla_totalCheckins.txt.gz",
    url="https://snap.stanford.edu/data/loc-gowalla_totalCheckins.txt.gz",
    instructions="the SNAP Gowalla check-ins, https://snap.stanford.edu/data/loc-Gowalla.html "
    "(file loc-gowalla_totalCheckins.txt.gz)")
_LASTFM = RawSource(
    file_name="userid-timestamp-artid-artname-traid-traname.tsv",
    url="http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-1K.tar.gz",
    instructions="Last.fm-1K, http://ocelma.net/MusicRecommendationDataset/lastfm-1K.html: "
    "download lastfm-dataset-1K.tar.gz (from http://mtg.upf.edu/static/datasets/last.fm/"
    "lastfm-dataset-1K.tar.gz) and unpack it (non-commercial use only, per its README)",
    archive_name="lastfm-dataset-1K.tar.gz",
    member_dir="lastfm-dataset-1K")
_DIGINETICA = RawSource(
    file_name="train-item-views.csv",
    url=None,
    instructions="the CIKM Cup 2016 Track 2 (personalized e-commerce search, DIGINETICA) training "
    "data: register at https://competitions.codalab.org/competitions/11161 (or follow "
    "https://cikm2016.cs.iupui.edu/cikm-cup), download dataset-train-diginetica.zip and unzip "
    "train-item-views.csv from it")
_YOOCHOOSE = RawSource(
    file_name="yoochoose-clicks.dat",
    url=None,
    instructions="the RecSys Challenge 2015 data, yoochoose-data.7z (challenge page "
    "https://2015.recsyschallenge.com/challenge.html; the address most projects use, not checked "
    "here, is https://s3-eu-west-1.amazonaws.com/yc-rdata/yoochoose-data.7z), and extract "
    "yoochoose-clicks.dat from it with `7z x yoochoose-data.7z`")

RAW_SOURCES: Dict[str, RawSource] = {
    "gowalla": _GOWALLA,
    "lastfm": _LASTFM,
    "diginetica": _DIGINETICA,
    "diginetica_srgnn": _DIGINETICA,
    "yoochoose1_64": _YOOCHOOSE,
    "yoochoose1_4": _YOOCHOOSE,
}


def _source(name: str) -> RawSource:
  if name not in RAW_SOURCES:
    raise ValueError(f"no raw source for dataset {name!r}; known: {', '.join(sorted(RAW_SOURCES))}")
  return RAW_SOURCES[name]


def candidate_paths(name: str, raw_dir: str) -> List[str]:
  """Where `locate` looks, in order: the file, plain or gzip, in `raw_dir` or its archive folder."""
  source = _source(name)
  base = source.file_name[:-3] if source.file_name.endswith(".gz") else source.file_name
  names = [source.file_name] + [n for n in (base, base + ".gz") if n != source.file_name]
  folders = [raw_dir] + ([os.path.join(raw_dir, source.member_dir)] if source.member_dir else [])
  return [os.path.join(folder, n) for folder in folders for n in names]


def locate(name: str, raw_dir: str) -> Optional[str]:
  """The raw file of dataset `name` in `raw_dir`, or None."""
  return next((path for path in candidate_paths(name, raw_dir) if os.path.isfile(path)), None)


def _where_to_put(source: RawSource, raw_dir: str) -> str:
  names = [source.file_name]
  if not source.file_name.endswith(".gz"):
    names.append(f"{source.file_name}.gz")
  if source.archive_name:
    names.append(f"the archive {source.archive_name}")
  return f"put {' or '.join(names)} in {raw_dir}"


def _unpack(source: RawSource, archive: str, raw_dir: str) -> str:
  """Extracts the member named `file_name` (in any folder) from a tar archive into `raw_dir`."""
  target = os.path.join(raw_dir, source.file_name)
  logging.info("Unpacking %s from %s", source.file_name, archive)
  try:
    with tarfile.open(archive, "r|*") as tar:  # streaming: one pass over the archive
      for member in tar:
        if member.isfile() and os.path.basename(member.name) == source.file_name:
          with atomic_output(target) as temporary, open(temporary, "wb") as out:
            shutil.copyfileobj(tar.extractfile(member), out, 1 << 20)
          return target
  except (tarfile.TarError, EOFError, OSError) as error:
    raise DatasetNotFoundError(
        f"cannot unpack {source.file_name} from {archive} ({error}); delete the archive and get "
        f"{source.instructions}; then {_where_to_put(source, raw_dir)}") from None
  raise DatasetNotFoundError(
      f"{archive} holds no {source.file_name}; delete it and get {source.instructions}; then "
      f"{_where_to_put(source, raw_dir)}")


def _fetch(source: RawSource, raw_dir: str) -> str:
  """Downloads `source.url` into `raw_dir` with `tf.keras.utils.get_file`; returns the path."""
  import tfrs_attenmixer  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  file_name = source.archive_name or source.file_name
  target = os.path.join(raw_dir, file_name)
  with atomic_output(target) as temporary:
    os.remove(temporary)  # get_file would take an existing file for a finished download
    tf.keras.utils.get_file(os.path.basename(temporary), origin=source.url,
                            file_hash=source.file_hash, cache_dir=raw_dir, cache_subdir="")
  return target


def locate_or_download(name: str, raw_dir: str, allow_download: bool = False) -> str:
  """The path of dataset `name`'s raw file in `raw_dir`, downloading it if allowed and possible.

  Args:
    name: a key of `RAW_SOURCES` (gowalla, lastfm, diginetica, diginetica_srgnn, yoochoose1_64,
      yoochoose1_4).
    raw_dir: the folder of raw files (created for a download).
    allow_download: whether to download a missing file that has a download address.

  Raises:
    ValueError: for an unknown `name`.
    data.errors.DatasetNotFoundError: the file is missing and cannot be downloaded (by hand
      only, downloads not allowed, or the download failed); the message says which file to get,
      from where, and where to put it.
  """
  source = _source(name)
  raw_dir = os.path.abspath(os.path.expanduser(raw_dir))
  found = locate(name, raw_dir)
  if found:
    logging.info("Using the raw file %s", found)
    return found
  if source.archive_name and os.path.isfile(os.path.join(raw_dir, source.archive_name)):
    return _unpack(source, os.path.join(raw_dir, source.archive_name), raw_dir)

  missing = f"the raw file of dataset {name!r} ({source.file_name}) is not in {raw_dir}"
  if source.url is None:
    raise DatasetNotFoundError(f"{missing}; it needs a manual download: get "
                               f"{source.instructions}; then {_where_to_put(source, raw_dir)}")
  if not allow_download:
    raise DatasetNotFoundError(f"{missing} and downloads are off: download {source.url} into "
                               f"{raw_dir} (or get {source.instructions}), or allow downloads "
                               "(--download)")
  try:
    os.makedirs(raw_dir, exist_ok=True)
    if not os.access(raw_dir, os.W_OK):
      raise PermissionError(f"{raw_dir} is not writable")
    downloaded = _fetch(source, raw_dir)
  except Exception as error:  # pylint: disable=broad-except  (get_file raises plain Exception)
    raise DatasetNotFoundError(f"{missing} and downloading {source.url} failed ({error}); get "
                               f"{source.instructions}; then "
                               f"{_where_to_put(source, raw_dir)}") from error
  if source.archive_name:
    path = _unpack(source, downloaded, raw_dir)
    os.remove(downloaded)
    return path
  return downloaded
