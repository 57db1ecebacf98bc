"""The raw-file preprocessors (`data.protocols`), their parsers' errors, and raw-file locations.

Every case writes small raw files in the real formats and checks one edge case of the published
protocols (LESSR for Gowalla, Last.fm and Diginetica; SR-GNN for Diginetica and Yoochoose).
"""

import gzip
import io
import tarfile

import pytest

from data import download, protocols, raw_formats
from data.errors import DataFormatError, DatasetNotFoundError

from raw_files import (DAY, T0, diginetica_file, gowalla_file, iso, lastfm_file, write,
                       yoochoose_file)


def sessions_of(user, start, items, step=60):
  """One user's events `step` seconds apart from `start`."""
  return [(user, start + k * step, item) for k, item in enumerate(items)]


def renumbered(sessions, ids):
  return [[ids[item] for item in session] for session in sessions]


def first_appearance_ids(sessions):
  ids = {}
  for session in sessions:
    for item in session:
      ids.setdefault(item, len(ids) + 1)
  return ids


LESSR_USER_DATASETS = [
    pytest.param(protocols.preprocess_gowalla, gowalla_file, DAY, "gowalla.txt.gz", id="gowalla"),
    pytest.param(protocols.preprocess_lastfm, lastfm_file, 8 * 3600, "lastfm.tsv", id="lastfm"),
]


# ------------------------------------------------------------------------------------------------
# LESSR: Gowalla and Last.fm.


@pytest.mark.parametrize("preprocess,writer,interval,name", LESSR_USER_DATASETS)
def test_lessr_session_starts_only_after_a_gap_longer_than_the_interval(
    tmp_path, preprocess, writer, interval, name):
  events = []
  for user in range(1, 6):  # 5 users: every item has support 5; 10 sessions, 2 test
    start = T0 + user * 1000
    # gap of exactly the interval: same session; gap of interval + 1 s: a new session.
    events += [(user, start, 10), (user, start + interval, 11),
               (user, start + 2 * interval + 1, 12), (user, start + 2 * interval + 61, 13)]
  split = preprocess(writer(tmp_path / name, events))
  # Listed by end time: every user's first session, then every user's second.
  assert split.train + split.test == [[1, 2]] * 5 + [[3, 4]] * 5
  assert len(split.test) == 2


@pytest.mark.parametrize("preprocess,writer,interval,name", LESSR_USER_DATASETS)
def test_lessr_removes_immediate_repeats_then_truncates_to_20(tmp_path, preprocess, writer,
                                                              interval, name):
  del interval
  long_session = list(range(100, 125))          # 25 events -> first 20
  repeats = [0, 0, 0] + list(range(1, 20))      # 22 events, 20 after the repeats -> all kept
  scattered = [50, 51, 50, 50, 51]              # non-immediate repeats stay: 50 51 50 51
  events = []
  for user in range(1, 6):
    base = T0 + user * 10 * DAY
    events += sessions_of(user, base, long_session)
    events += sessions_of(user, base + 2 * DAY, repeats)
    events += sessions_of(user, base + 4 * DAY, scattered)
  split = preprocess(writer(tmp_path / name, events))
  sessions = split.train + split.test
  assert len(sessions) == 15 and len(split.test) == 3
  ids = first_appearance_ids([long_session[:20], list(range(20)), [50, 51]])
  for k in range(5):
    assert sessions[3 * k:3 * k + 3] == renumbered(
        [long_session[:20], list(range(20)), [50, 51, 50, 51]], ids)


def test_lessr_keeps_the_top_n_items_with_ties_to_the_first_seen(tmp_path, monkeypatch):
  monkeypatch.setattr(protocols, "GOWALLA_TOP_ITEMS", 3)
  # Counts: 5 -> 15, 1 -> 10, then ties 3, 2, 4 -> 5 each; item 3 is seen first, so it is kept.
  events = []
  for user in range(1, 6):
    base = T0 + user * 10 * DAY
    events += sessions_of(user, base, [1, 3, 1, 5])
    events += sessions_of(user, base + 2 * DAY, [2, 5, 4, 5])
  split = protocols.preprocess_gowalla(gowalla_file(tmp_path / "g.txt", events))
  ids = first_appearance_ids([[1, 3, 1, 5]])
  # Dropping 2 and 4 makes [2, 5, 4, 5] an immediate repeat [5, 5]: LESSR does not remove it.
  assert split.train + split.test == renumbered([[1, 3, 1, 5], [5, 5]], ids) * 5


def test_lessr_filters_until_nothing_changes(tmp_path):
  # Items 3-6 have exactly 5 events, 7 has 1. Round 1 drops item 7, leaving [6]; round 2 drops
  # [6], so item 6 falls to 4 events and goes, leaving [5]; rounds 3 and 4 do the same to items 5
  # and 4, round 5 to item 3; round 6 changes nothing. One pass would keep items 3 to 6.
  chain = [[6, 7], [5, 6], [4, 5], [3, 4]]
  background = [[1, 3, 2, 4, 1, 5, 2, 6]] * 3 + [[1, 3, 2]] + [[1, 2]] * 4
  events = []
  for user, items in enumerate(chain + background, start=1):
    events += sessions_of(user, T0 + user * 1000, items)
  split = protocols.preprocess_gowalla(gowalla_file(tmp_path / "g.txt", events))
  assert split.train + split.test == [[1, 2, 1, 2]] * 3 + [[1, 2]] * 5
  assert len(split.test) == 1


def test_lessr_test_set_is_the_last_20_percent_by_end_time(tmp_path):
  events = []
  # User 1's session starts first but ends last: it is a test session.
  events += sessions_of(1, T0, [1, 2, 1, 2, 1, 2, 1, 2], step=3600)
  for user in range(2, 11):
    events += sessions_of(user, T0 + user * 60, [1, 2] if user != 5 else [2, 1])
  split = protocols.preprocess_gowalla(gowalla_file(tmp_path / "g.txt", events))
  assert len(split.train) == 8 and len(split.test) == 2
  assert split.test[-1] == [1, 2, 1, 2, 1, 2, 1, 2]
  assert split.test[0] == [1, 2]          # user 10 ends second to last
  assert [2, 1] in split.train


def test_lessr_drops_unseen_test_items_and_short_test_sessions(tmp_path):
  events = []
  for user in range(1, 9):
    events += sessions_of(user, T0 + user * 60, [1, 2, 3])
  # The two test sessions (latest) hold item 9, never seen in training.
  events += sessions_of(20, T0 + 10 * DAY, [9, 1, 9, 1, 9, 1, 9])  # -> 1 1 1: repeats stay
  events += sessions_of(21, T0 + 11 * DAY, [9, 2])                  # -> [2]: dropped
  split = protocols.preprocess_gowalla(gowalla_file(tmp_path / "g.txt", events))
  assert split.train == [[1, 2, 3]] * 8
  assert split.test == [[1, 1, 1]]


def test_lessr_renumbers_by_first_appearance_in_user_order(tmp_path):
  # User 7 comes first in the file; their session ends after user 8's, but LESSR factorizes the
  # training items in its (user, time) row order, so user 7's items are numbered first.
  events = []
  events += sessions_of(7, T0 + 5000, [30, 31])
  events += sessions_of(8, T0, [40, 41])
  for user in range(9, 13):
    events += sessions_of(user, T0 + user * 10000, [30, 31, 40, 41])
  events += sessions_of(99, T0 + DAY * 5, [30, 40])
  split = protocols.preprocess_gowalla(gowalla_file(tmp_path / "g.txt", events))
  assert split.train[:2] == [[3, 4], [1, 2]]       # listed by end time: user 8, then user 7
  assert split.train[2:] == [[1, 2, 3, 4]] * 4
  assert split.test == [[1, 3]]


def test_lastfm_drops_rows_with_a_missing_field(tmp_path):
  lines = []
  for user in range(1, 6):
    for k, artist in enumerate(["a-1", "", "a-2", "NA", "a-1"]):
      lines.append(f"user_{user}\t{iso(T0 + user * 1000 + 60 * k)}\t{artist}\tname\t\tsong\n")
  lines.append("user_1\t\ta-1\tname\t\tsong\n")          # missing time
  lines.append("user_1\n")                                 # missing everything after the user
  split = protocols.preprocess_lastfm(write(tmp_path / "l.tsv", "".join(lines)))
  assert split.train + split.test == [[1, 2, 1]] * 5


# ------------------------------------------------------------------------------------------------
# LESSR: Diginetica.


def test_diginetica_lessr(tmp_path):
  views = []
  # Session 30: listed out of order; time = eventdate + timeframe orders it 1, 2, 3.
  views += [(30, 3, 500, "2016-05-01"), (30, 1, 0, "2016-05-01"), (30, 2, 100, "2016-05-01")]
  for session in range(31, 35):
    views += [(session, 1, 0, "2016-05-02"), (session, 2, 10, "2016-05-02"),
              (session, 3, 20, "2016-05-02")]
  views += [(35, 1, 0, "2016-05-02")]                       # length 1: dropped first
  # Session 36: 25 views; only the first 20 are kept, so item 99 (views 21-25) is dropped.
  views += [(36, 1 if k % 2 else 2, k, "2016-05-03") for k in range(20)]
  views += [(36, 99, 100 + k, "2016-05-03") for k in range(5)]
  # Item 8 has 5 views, but one is in session 40 which becomes short after item 7 (rare) is
  # dropped. LESSR does not repeat the filters, so item 8 stays with 4 views.
  views += [(40, 8, 0, "2016-05-03"), (40, 7, 1, "2016-05-03")]
  views += [(41 + k, 8, 0, "2016-05-04") for k in range(4)]
  views += [(41 + k, 1, 5, "2016-05-04") for k in range(4)]
  # Split: the latest time is 2016-05-20 + 1000 ms; sessions ending before that minus 7 days are
  # training. Session 50 ends exactly at the split time (test); session 51 1 ms before (training).
  views += [(50, 1, 0, "2016-05-13"), (50, 2, 1000, "2016-05-13")]
  views += [(51, 2, 0, "2016-05-13"), (51, 1, 999, "2016-05-13")]
  views += [(52, 3, 0, "2016-05-20"), (52, 1, 1000, "2016-05-20")]
  split = protocols.preprocess_diginetica_lessr(diginetica_file(tmp_path / "d.csv", views))
  ids = {1: 1, 2: 2, 3: 3, 8: 4}  # first appearance in training rows sorted by session id
  expected_train = ([[1, 2, 3]] * 5 + [[2 if k % 2 == 0 else 1 for k in range(20)]] + [[8, 1]] * 4
                    + [[2, 1]])
  assert split.train == renumbered(expected_train, ids)
  assert split.test == renumbered([[1, 2], [3, 1]], ids)


# ------------------------------------------------------------------------------------------------
# SR-GNN: Diginetica.


def test_diginetica_srgnn(tmp_path):
  views = []
  # Session 5 is listed first but dated later; its items are sorted by timeframe (stable).
  views += [(5, 2, 300, "2016-05-03"), (5, 1, 100, "2016-05-03"), (5, 3, 100, "2016-05-03")]
  for session in range(10, 14):
    views += [(session, 1, 0, "2016-05-01"), (session, 2, 1, "2016-05-01"),
              (session, 3, 2, "2016-05-01")]
  views += [(14, 4, 0, "2016-05-01")]                   # length 1: dropped before counting
  views += [(15 + k, 4, 0, "2016-05-02") for k in range(4)]
  views += [(15 + k, 1, 1, "2016-05-02") for k in range(4)]  # item 4: 4 views left -> dropped
  # Immediate repeats and long sessions are kept whole (no truncation).
  views += [(20, 1 + k % 2, k, "2016-05-02") for k in range(22)] + [(20, 2, 99, "2016-05-02")]
  # Dates: the latest is 2016-05-20; split = 2016-05-13: session 31 (that day) is in neither set.
  views += [(30, 1, 0, "2016-05-12"), (30, 3, 1, "2016-05-12")]
  views += [(31, 1, 0, "2016-05-13"), (31, 2, 1, "2016-05-13")]
  views += [(32, 2, 0, "2016-05-14"), (32, 9, 1, "2016-05-14"), (32, 3, 2, "2016-05-14")]
  views += [(33, 9, 0, "2016-05-20"), (33, 3, 1, "2016-05-20")]  # item 9 only in test
  views += [(34 + k, 9, 0, "2016-05-20") for k in range(3)]
  views += [(34 + k, 1, 1, "2016-05-20") for k in range(3)]
  split = protocols.preprocess_diginetica_srgnn(diginetica_file(
      tmp_path / "d.csv.gz", views, header="session_id;user_id;item_id;timeframe;eventdate"))
  long_session = [1 + k % 2 for k in range(22)] + [2]
  # Sorted by date (05-01, 05-02, 05-03, 05-12); session 31 (05-13) is in neither set.
  expected_train = [[1, 2, 3]] * 4 + [long_session] + [[1, 3, 2], [1, 3]]
  ids = first_appearance_ids(expected_train)
  assert split.train == renumbered(expected_train, ids)
  # Test: [2, 9, 3] -> [2, 3]; [9, 3] -> [3] dropped; [9, 1] x3 -> [1] dropped.
  assert split.test == renumbered([[2, 3]], ids)


def test_srgnn_session_date_is_its_last_row_in_the_file(tmp_path):
  views = [(1, 1, 0, "2016-05-01"), (1, 2, 1, "2016-05-01"), (2, 1, 0, "2016-05-02"),
           (2, 2, 1, "2016-05-02"), (3, 1, 0, "2016-05-03"), (3, 2, 1, "2016-05-03"),
           (4, 1, 0, "2016-05-04"), (4, 2, 1, "2016-05-04"),
           # Session 1 reappears: its date becomes 2016-05-30 (the latest, so a test session).
           (1, 1, 2, "2016-05-30"), (5, 2, 0, "2016-05-05"), (5, 1, 1, "2016-05-05")]
  split = protocols.preprocess_diginetica_srgnn(diginetica_file(tmp_path / "d.csv", views))
  assert split.train == [[1, 2]] * 3 + [[2, 1]]
  assert split.test == [[1, 2, 1]]


# ------------------------------------------------------------------------------------------------
# SR-GNN: Yoochoose.


def yoochoose_sessions(sessions, start):
  """Clicks of consecutive sessions (lists of items) one hour apart from `start`."""
  clicks = []
  for k, items in enumerate(sessions):
    clicks += [(k + 1, start + 3600 * k + j, item) for j, item in enumerate(items)]
  return clicks


def test_yoochoose_last_day_split_to_the_second(tmp_path):
  train_part = [[1, 2], [2, 3], [3, 1], [1, 2], [2, 3], [3, 1], [1, 2, 3]]  # items 1-3: 5+ each
  clicks = yoochoose_sessions(train_part, T0)
  latest = T0 + 10 * DAY
  # Session dates are their last click, milliseconds cut off (SR-GNN parses `timestamp[:19]`).
  clicks += [(100, latest - DAY - 1, 1), (100, latest - DAY, 2, 999)]  # exactly the split: dropped
  clicks += [(101, latest - DAY, 3), (101, latest - DAY + 1, 1, 0)]    # after it: test
  clicks += [(102, latest - 5, 2), (102, latest, 3)]
  path = yoochoose_file(tmp_path / "yoochoose-clicks.dat", clicks)
  split = protocols.preprocess_yoochoose(path, fraction=1)
  ids = first_appearance_ids(train_part)
  assert split.train == renumbered(train_part, ids)
  assert split.test == renumbered([[3, 1], [2, 3]], ids)


@pytest.mark.parametrize("fraction,expected", [
    # 12 training examples: examples per session 2, 3, 2, 2, 3, each listed longest prefix first.
    (12, [[4, 1]]),                           # keep 1: the shortest prefix of the last session
    (6, [[4, 1, 2]]),                         # keep 2
    (4, [[4, 1, 2, 3]]),                      # keep 3: the last session whole
    (3, [[2, 4], [4, 1, 2, 3]]),              # keep 4: and 1 example of [2, 4, 1]
    (2, [[1, 3], [2, 4, 1], [4, 1, 2, 3]]),   # keep 6
    (1, [[1, 2, 3], [3, 4, 1, 2], [1, 3, 4], [2, 4, 1], [4, 1, 2, 3]]),
])
def test_yoochoose_keeps_the_most_recent_fraction_of_examples(tmp_path, fraction, expected):
  train_part = [[1, 2, 3], [3, 4, 1, 2], [1, 3, 4], [2, 4, 1], [4, 1, 2, 3]]
  clicks = yoochoose_sessions(train_part, T0)
  clicks += [(51, T0 + 10 * DAY - 10, 3), (51, T0 + 10 * DAY - 5, 3),
             (50, T0 + 10 * DAY, 4), (50, T0 + 10 * DAY + 1, 2)]
  path = yoochoose_file(tmp_path / "clicks.dat.gz", clicks)
  split = protocols.preprocess_yoochoose(path, fraction=fraction)
  ids = first_appearance_ids(train_part)   # numbered over the full training set
  assert split.train == renumbered(expected, ids)
  assert split.test == renumbered([[3, 3], [4, 2]], ids)
  assert sum(len(session) - 1 for session in split.train) == 12 // fraction


def test_yoochoose_accepts_the_header_srgnn_used(tmp_path):
  clicks = yoochoose_sessions([[1, 2], [2, 1], [1, 2], [2, 1], [1, 2, 1]], T0)
  clicks += [(50, T0 + 10 * DAY, 1), (50, T0 + 10 * DAY + 1, 2)]
  path = tmp_path / "clicks.dat"
  yoochoose_file(path, clicks)
  with open(path) as plain:
    body = plain.read()
  with_header = write(tmp_path / "with_header.dat",
                      "session_id,timestamp,item_id,category\n" + body)
  assert (protocols.preprocess_yoochoose(with_header, 1)
          == protocols.preprocess_yoochoose(str(path), 1))


def test_yoochoose_rejects_a_bad_fraction_and_too_few_examples(tmp_path):
  path = yoochoose_file(tmp_path / "c.dat", yoochoose_sessions([[1, 2]] * 5, T0)
                        + [(50, T0 + 10 * DAY, 1), (50, T0 + 10 * DAY + 1, 2)])
  with pytest.raises(ValueError, match="fraction"):
    protocols.preprocess_yoochoose(path, fraction=0)
  with pytest.raises(ValueError, match="too few"):
    protocols.preprocess_yoochoose(path, fraction=64)


# ------------------------------------------------------------------------------------------------
# Parser errors name the file and the line.


@pytest.mark.parametrize("reader,body,line,message", [
    (raw_formats.read_gowalla,
     "1\t2010-10-19T23:55:27Z\t0\t0\t5\nx\t2010-10-19T23:55:27Z\t0\t0\t5\n", 2,
     "user id 'x' is not an integer"),
    (raw_formats.read_gowalla, "1\t2010-10-19T23:55:27Z\t0\t0\t-5\n", 1, "is negative"),
    (raw_formats.read_gowalla, "1\t2010-10-19T23:55:27Z\t0\t0\t5\n\n", 2, "empty line"),
    (raw_formats.read_gowalla, "1\t2010-10-19 23:55:27\t0\t0\t5\n", 1, "not an ISO 8601"),
    (raw_formats.read_gowalla, "1\t2010-02-30T23:55:27Z\t0\t0\t5\n", 1, "not a date"),
    (raw_formats.read_gowalla, "1\t2010-02-03T24:00:00Z\t0\t0\t5\n", 1, "invalid time of day"),
    (raw_formats.read_gowalla, "1\t2010-10-19T23:55:27Z\t0\t0\t5\n2\t\"open\n", 2,
     "never closed"),
    (raw_formats.read_lastfm, "user_1\t2009-05-04T23:08:57Z\ta\tb\tc\td\n\xff\n", 2, "UTF-8"),
    (raw_formats.read_diginetica, "sessionId;itemId;timeframe;eventdate\n", 1, "header"),
    (raw_formats.read_diginetica, "sessionId;userId;itemId;timeframe;eventdate\n1;;2;3\n", 2,
     "expected 5 fields"),
    (raw_formats.read_diginetica, "sessionId;userId;itemId;timeframe;eventdate\n1;;2;3;16-5-1\n",
     2, "not a date"),
    (raw_formats.read_yoochoose, "1,2014-04-07T10:51:09.277Z,214536502,0\n1,x,2,0\n", 2,
     "timestamp 'x'"),
    (raw_formats.read_yoochoose, "1,2014-04-07T10:51:09.277Z,2.5,0\n", 1, "not an integer"),
])
def test_parsers_report_the_file_and_line(tmp_path, reader, body, line, message):
  path = tmp_path / "raw"
  path.write_bytes(body.encode("latin-1"))
  with pytest.raises(DataFormatError, match=message) as caught:
    list(reader(str(path)))
  assert (caught.value.path, caught.value.line) == (str(path), line)
  assert str(caught.value).startswith(f"{path}:{line}: ")


def test_parsers_report_a_missing_file_and_a_truncated_gzip(tmp_path):
  with pytest.raises(DataFormatError, match="file not found"):
    protocols.preprocess_gowalla(str(tmp_path / "absent.txt.gz"))
  lines = "".join(f"{k}\t2010-10-19T23:55:27Z\t0\t0\t{k}\n" for k in range(20000))
  whole = gzip.compress(lines.encode())
  path = tmp_path / "cut.txt.gz"
  path.write_bytes(whole[:len(whole) // 2])
  with pytest.raises(DataFormatError, match="truncated gzip") as caught:
    list(raw_formats.read_gowalla(str(path)))
  assert caught.value.line > 1000
  assert str(caught.value).startswith(f"{path}:{caught.value.line}: ")


def test_parsers_read_gzip_by_content_and_skip_a_byte_order_mark(tmp_path):
  body = "\ufeff1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:51:10Z,7,S\n"
  path = tmp_path / "clicks.dat"  # gzip data under a plain name
  path.write_bytes(gzip.compress(body.encode()))
  assert list(raw_formats.read_yoochoose(str(path))) == [(1, 1396867869, 214536502),
                                                         (1, 1396867870, 7)]


# ------------------------------------------------------------------------------------------------
# Raw-file locations.


def test_every_dataset_has_a_raw_source():
  assert set(download.RAW_SOURCES) == {"gowalla", "lastfm", "diginetica", "diginetica_srgnn",
                                       "yoochoose1_64", "yoochoose1_4"}
  assert download.RAW_SOURCES["gowalla"].url == (
      "https://snap.stanford.edu/data/loc-gowalla_totalCheckins.txt.gz")


def test_locate_uses_a_file_already_present(tmp_path):
  (tmp_path / "loc-gowalla_totalCheckins.txt").write_text("")
  assert download.locate_or_download("gowalla", str(tmp_path)) == str(
      tmp_path / "loc-gowalla_totalCheckins.txt")
  (tmp_path / "train-item-views.csv.gz").write_bytes(b"")
  assert download.locate_or_download("diginetica_srgnn", str(tmp_path)) == str(
      tmp_path / "train-item-views.csv.gz")
  folder = tmp_path / "lastfm-dataset-1K"
  folder.mkdir()
  (folder / "userid-timestamp-artid-artname-traid-traname.tsv").write_text("")
  assert download.locate_or_download("lastfm", str(tmp_path), allow_download=True) == str(
      folder / "userid-timestamp-artid-artname-traid-traname.tsv")


def test_locate_unpacks_an_archive_already_present(tmp_path):
  content = b"user_000001\t2009-05-04T23:08:57Z\tid\tname\t\ttrack\n"
  with tarfile.open(tmp_path / "lastfm-dataset-1K.tar.gz", "w:gz") as tar:
    for name, data in (("lastfm-dataset-1K/README.txt", b"readme"),
                       ("lastfm-dataset-1K/userid-timestamp-artid-artname-traid-traname.tsv",
                        content)):
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  path = download.locate_or_download("lastfm", str(tmp_path))
  assert path == str(tmp_path / "userid-timestamp-artid-artname-traid-traname.tsv")
  with open(path, "rb") as unpacked:
    assert unpacked.read() == content


def test_offline_errors_say_what_to_get_from_where_and_where_to_put_it(tmp_path):
  raw_dir = str(tmp_path / "raw")
  with pytest.raises(DatasetNotFoundError) as caught:
    download.locate_or_download("gowalla", raw_dir, allow_download=False)
  for part in ("loc-gowalla_totalCheckins.txt.gz", "https://snap.stanford.edu/data/"
               "loc-gowalla_totalCheckins.txt.gz", raw_dir, "--download"):
    assert part in str(caught.value)
  for name, parts in (("diginetica", ("train-item-views.csv", "codalab", "manual")),
                      ("yoochoose1_4", ("yoochoose-clicks.dat", "yoochoose-data.7z", "7z x"))):
    with pytest.raises(DatasetNotFoundError) as caught:
      download.locate_or_download(name, raw_dir, allow_download=True)
    for part in parts + (raw_dir,):
      assert part in str(caught.value)
  with pytest.raises(ValueError, match="no raw source"):
    download.locate_or_download("retailrocket", raw_dir)
