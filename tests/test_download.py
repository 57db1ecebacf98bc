"""Raw-file downloads over real HTTP (`data.download.fetch` and `locate_or_download`).

A `http.server` on 127.0.0.1 serves files from a temporary folder: as they are, under
/truncated/ with a Content-Length larger than the bytes it sends before closing the connection.
A download lands whole (and verified, when a checksum is given) at its destination, or fails
with an error that names the address and the destination and leaves nothing there.
"""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import os
import random
import tarfile
import threading

import pytest

from data import download, raw_formats
from data.errors import DatasetNotFoundError, DownloadError

TRUNCATED = "/truncated/"
GOWALLA = gzip.compress(b"1\t2010-10-19T23:55:27Z\t0\t0\t5\n" * 1000)
PAYLOAD = random.Random(0).randbytes((2 << 20) + 12345)  # more than one read of `fetch`


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Serves the folder; a path under /truncated/ announces 1,000 more bytes than it sends."""

  def do_GET(self):  # pylint: disable=invalid-name
    if not self.path.startswith(TRUNCATED):
      return super().do_GET()
    with open(os.path.join(self.directory, self.path[len(TRUNCATED):]), "rb") as served:
      body = served.read()
    self.send_response(200)
    self.send_header("Content-Length", str(len(body) + 1000))
    self.end_headers()
    self.wfile.write(body)
    self.close_connection = True  # the server closes the socket when this returns
    return None

  def log_message(self, *args):  # pylint: disable=arguments-differ
    del args  # keep the test output quiet


@pytest.fixture(name="server")
def fixture_server(tmp_path, monkeypatch):
  """(folder the server serves, its base URL http://127.0.0.1:<port>)."""
  for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
    monkeypatch.delenv(proxy, raising=False)
  served = tmp_path / "served"
  served.mkdir()
  httpd = http.server.ThreadingHTTPServer(
      ("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
  httpd.shutdown()
  httpd.server_close()
  thread.join()


def _sha256(data):
  return hashlib.sha256(data).hexdigest()


def test_a_good_file_is_downloaded_verified_and_placed_at_its_destination(server, tmp_path):
  served, base = server
  (served / "payload.bin").write_bytes(PAYLOAD)
  (served / "checkins.txt.gz").write_bytes(GOWALLA)
  raw_dir = tmp_path / "raw"
  path = download.fetch(f"{base}/payload.bin", str(raw_dir / "payload.bin"),
                        sha256=_sha256(PAYLOAD).upper())  # either case
  assert path == str(raw_dir / "payload.bin")
  assert (raw_dir / "payload.bin").read_bytes() == PAYLOAD
  assert os.listdir(raw_dir) == ["payload.bin"]  # no temporary file left

  # Through the dataset registry, with the source pointed at the server and its checksum.
  sources = {"gowalla": download.RawSource(
      file_name="loc-gowalla_totalCheckins.txt.gz", url=f"{base}/checkins.txt.gz",
      instructions="test", file_hash=_sha256(GOWALLA))}
  path = download.locate_or_download("gowalla", str(tmp_path / "other"), allow_download=True,
                                     sources=sources)
  assert path == str(tmp_path / "other" / "loc-gowalla_totalCheckins.txt.gz")
  assert list(raw_formats.read_gowalla(path))[0] == (1, 1287532527, 5)
  assert os.listdir(tmp_path / "other") == ["loc-gowalla_totalCheckins.txt.gz"]


def test_a_downloaded_archive_is_unpacked_and_removed(server, tmp_path):
  served, base = server
  member = b"user_000001\t2009-05-04T23:08:57Z\tid\tname\t\ttrack\n"
  with tarfile.open(served / "lastfm.tar.gz", "w:gz") as tar:
    info = tarfile.TarInfo("lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv")
    info.size = len(member)
    tar.addfile(info, io.BytesIO(member))
  sources = {"lastfm": dataclasses.replace(
      download.RAW_SOURCES["lastfm"], url=f"{base}/lastfm.tar.gz")}
  raw_dir = tmp_path / "raw"
  path = download.locate_or_download("lastfm", str(raw_dir), allow_download=True,
                                     sources=sources)
  assert path == str(raw_dir / "userid-timestamp-artid-artname-traid-traname.tsv")
  assert (raw_dir / "userid-timestamp-artid-artname-traid-traname.tsv").read_bytes() == member
  assert os.listdir(raw_dir) == ["userid-timestamp-artid-artname-traid-traname.tsv"]


def test_a_truncated_download_fails_and_leaves_no_partial_file(server, tmp_path):
  served, base = server
  (served / "payload.bin").write_bytes(PAYLOAD)
  url, target = f"{base}{TRUNCATED}payload.bin", str(tmp_path / "raw" / "payload.bin")
  with pytest.raises(DownloadError) as caught:
    download.fetch(url, target)  # no checksum: the announced length alone catches it
  assert (caught.value.url, caught.value.path) == (url, target)
  assert url in str(caught.value) and target in str(caught.value)
  assert f"{len(PAYLOAD)} of the {len(PAYLOAD) + 1000}" in caught.value.reason
  assert os.listdir(tmp_path / "raw") == []

  sources = {"gowalla": dataclasses.replace(download.RAW_SOURCES["gowalla"], url=url)}
  with pytest.raises(DatasetNotFoundError) as caught:
    download.locate_or_download("gowalla", str(tmp_path / "raw"), allow_download=True,
                                sources=sources)
  assert url in str(caught.value) and "loc-gowalla_totalCheckins.txt.gz" in str(caught.value)
  assert isinstance(caught.value.__cause__, DownloadError)
  assert os.listdir(tmp_path / "raw") == []


def test_a_download_with_a_wrong_checksum_fails_and_leaves_nothing(server, tmp_path):
  served, base = server
  (served / "checkins.txt.gz").write_bytes(GOWALLA)
  url, target = f"{base}/checkins.txt.gz", str(tmp_path / "raw" / "checkins.txt.gz")
  expected = _sha256(b"another file")
  with pytest.raises(DownloadError) as caught:
    download.fetch(url, target, sha256=expected)
  assert (caught.value.url, caught.value.path) == (url, target)
  for part in (target, expected, _sha256(GOWALLA)):
    assert part in str(caught.value)
  assert os.listdir(tmp_path / "raw") == []

  # An earlier file at the destination is kept as it was.
  (tmp_path / "raw" / "checkins.txt.gz").write_bytes(b"earlier")
  with pytest.raises(DownloadError):
    download.fetch(url, target, sha256=expected)
  assert os.listdir(tmp_path / "raw") == ["checkins.txt.gz"]
  assert (tmp_path / "raw" / "checkins.txt.gz").read_bytes() == b"earlier"

  # Through the dataset registry: the source's checksum is checked.
  sources = {"gowalla": dataclasses.replace(download.RAW_SOURCES["gowalla"], url=url,
                                            file_hash=expected)}
  with pytest.raises(DatasetNotFoundError) as caught:
    download.locate_or_download("gowalla", str(tmp_path / "other"), allow_download=True,
                                sources=sources)
  assert expected in str(caught.value) and url in str(caught.value)
  assert os.listdir(tmp_path / "other") == []


def test_a_missing_file_on_the_server_fails_naming_the_address(server, tmp_path):
  _, base = server
  url, target = f"{base}/absent.gz", str(tmp_path / "raw" / "absent.gz")
  with pytest.raises(DownloadError, match="404") as caught:
    download.fetch(url, target)
  assert (caught.value.url, caught.value.path) == (url, target)
  sources = {"gowalla": dataclasses.replace(download.RAW_SOURCES["gowalla"], url=url)}
  with pytest.raises(DatasetNotFoundError, match="404") as caught:
    download.locate_or_download("gowalla", str(tmp_path / "raw"), allow_download=True,
                                sources=sources)
  assert url in str(caught.value)
  assert os.listdir(tmp_path / "raw") == []
