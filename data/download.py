"""Where each dataset's raw file comes from, and finding (or downloading) it in a raw-data folder.

`locate_or_download(name, raw_dir)` returns the raw file the dataset's preprocessor in
`data.protocols` reads. It looks in `raw_dir` for the file, plain or gzip-compressed; for Last.fm
also for the unpacked archive folder, or the archive itself (which it unpacks). Only Gowalla and
Last.fm have a direct download address; Diginetica (registration) and Yoochoose (a 7-Zip archive,
which Python's standard library cannot unpack) must be fetched by hand: the error says which file
to get, from where, and where to put it. `fetch` downloads: it streams into a temporary file beside
the destination and renames it into place only when all the bytes the server announced have
arrived and, when a checksum is known, they match it. No source publishes a checksum
(`RawSource.file_hash` is None); the preprocessors reject corrupt files.
"""

import dataclasses
import hashlib
import http.client
import os
import shutil
import tarfile
import urllib.request
from typing import Dict, List, Mapping, Optional

from absl import logging

from data.atomic import atomic_output
from data.errors import DatasetNotFoundError, DownloadError


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


def _source(name: str, sources: Mapping[str, RawSource]) -> RawSource:
  if name not in sources:
    raise ValueError(f"no raw source for dataset {name!r}; known: {', '.join(sorted(sources))}")
  return sources[name]


def candidate_paths(name: str, raw_dir: str,
                    sources: Mapping[str, RawSource] = RAW_SOURCES) -> List[str]:
  """Where `locate` looks, in order: the file, plain or gzip, in `raw_dir` or its archive folder."""
  source = _source(name, sources)
  base = source.file_name[:-3] if source.file_name.endswith(".gz") else source.file_name
  names = [source.file_name] + [n for n in (base, base + ".gz") if n != source.file_name]
  folders = [raw_dir] + ([os.path.join(raw_dir, source.member_dir)] if source.member_dir else [])
  return [os.path.join(folder, n) for folder in folders for n in names]


def locate(name: str, raw_dir: str,
           sources: Mapping[str, RawSource] = RAW_SOURCES) -> Optional[str]:
  """The raw file of dataset `name` in `raw_dir`, or None."""
  return next((path for path in candidate_paths(name, raw_dir, sources) if os.path.isfile(path)),
              None)


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


_CHUNK_BYTES = 1 << 20
_PROGRESS_BYTES = 64 << 20  # a progress line every this many bytes


def fetch(url: str, path: str, sha256: Optional[str] = None, timeout: float = 60.0) -> str:
  """Downloads `url` to `path`, whole and (with `sha256`) verified, or not at all.

  The bytes stream into a temporary file beside `path`, which replaces `path` only once the
  connection has delivered every byte the server announced (its Content-Length, when it sends
  one) and their sha256 equals `sha256`. On any failure `path` is left as it was and the
  temporary file is removed.

  Args:
    url: the address (a scheme `urllib.request.urlopen` opens: http, https, ftp, file).
    path: the destination file (its folder is created).
    sha256: the expected sha256 of the download in hex, or None to accept any content.
    timeout: seconds to wait for the connection, and then for each next bytes, before failing.

  Returns:
    `path`.

  Raises:
    data.errors.DownloadError: the address cannot be opened or answers with an error, the
      connection fails or ends before the announced length, or the sha256 differs (the error
      states both checksums).
  """
  logging.info("Downloading %s to %s", url, path)
  digest, received, announced = hashlib.sha256(), 0, None
  with atomic_output(path) as temporary:
    try:
      with urllib.request.urlopen(url, timeout=timeout) as response:
        length = (response.headers.get("Content-Length") or "").strip()
        announced = int(length) if length.isdigit() else None
        with open(temporary, "wb") as out:
          for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
            out.write(chunk)
            digest.update(chunk)
            if (received + len(chunk)) // _PROGRESS_BYTES > received // _PROGRESS_BYTES:
              logging.info("Downloaded %d of %s bytes of %s", received + len(chunk),
                           announced if announced is not None else "?", url)
            received += len(chunk)
    except (OSError, ValueError, http.client.HTTPException) as error:
      raise DownloadError(url, path, str(error) or type(error).__name__) from error
    if announced is not None and received != announced:
      raise DownloadError(url, path, f"the connection ended after {received} of the {announced} "
                          "bytes the server announced")
    if sha256 is not None and digest.hexdigest() != sha256.lower():
      raise DownloadError(url, path, f"its sha256 is {digest.hexdigest()}, not the expected "
                          f"{sha256.lower()}")
  logging.info("Downloaded %s (%d bytes)", path, received)
  return path


def locate_or_download(name: str, raw_dir: str, allow_download: bool = False,
                       sources: Mapping[str, RawSource] = RAW_SOURCES) -> str:
  """The path of dataset `name`'s raw file in `raw_dir`, downloading it if allowed and possible.

  Args:
    name: a key of `RAW_SOURCES` (gowalla, lastfm, diginetica, diginetica_srgnn, yoochoose1_64,
      yoochoose1_4).
    raw_dir: the folder of raw files (created for a download).
    allow_download: whether to download a missing file that has a download address.
    sources: where each dataset's raw file comes from, and its checksum.

  Raises:
    ValueError: for an unknown `name`.
    data.errors.DatasetNotFoundError: the file is missing and cannot be downloaded (by hand
      only, downloads not allowed, or the download failed, ended early or differs from its
      checksum, which leaves no file behind); the message says which file to get, from where,
      and where to put it.
  """
  source = _source(name, sources)
  raw_dir = os.path.abspath(os.path.expanduser(raw_dir))
  found = locate(name, raw_dir, sources)
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
    downloaded = fetch(source.url, os.path.join(raw_dir, source.archive_name or source.file_name),
                       source.file_hash)
  except OSError as error:  # DownloadError, or a raw_dir that cannot be written
    reason = error.reason if isinstance(error, DownloadError) else error
    raise DatasetNotFoundError(f"{missing} and downloading {source.url} failed ({reason}); get "
                               f"{source.instructions}; then "
                               f"{_where_to_put(source, raw_dir)}") from error
  if source.archive_name:
    path = _unpack(source, downloaded, raw_dir)
    os.remove(downloaded)
    return path
  return downloaded
