"""Property tests of the raw-file parsers (`data.raw_formats`).

Whatever the bytes (random, mutated real rows, odd encodings, truncated gzip, huge lines), a parser
either yields well-typed rows or raises `DataFormatError` naming the file and a line; and real rows
come back exactly as written.
"""

import calendar
import datetime
import gzip

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data import raw_formats
from data.errors import DataFormatError

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

HEADERS = {"diginetica": "sessionId;userId;itemId;timeframe;eventdate\n"}
SAMPLE_ROWS = {
    "gowalla": "196514\t2010-07-24T13:45:06Z\t53.3648119\t-2.2723465833\t145064\n",
    "lastfm": ("user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\t"
               "Deep Dish\t\tFuck Me Im Famous (Pacha Ibiza)-09-28-2007\n"),
    "diginetica": "1;NA;81766;526309;2016-05-09\n",
    "yoochoose": "1,2014-04-07T10:51:09.277Z,214536502,0\n",
}
READERS = {
    "gowalla": raw_formats.read_gowalla,
    "lastfm": raw_formats.read_lastfm,
    "diginetica": raw_formats.read_diginetica,
    "yoochoose": raw_formats.read_yoochoose,
}
# Characters that stress the tokeniser and the field parsers.
TRICKY = st.sampled_from(["\t", ";", ",", '"', '""', "\r", "\n", "\r\n", "\x00", "-", " ", "Z", "T",
                          ".", ":", "0", "9", "\ufeff", "é", "\u0663", "_", "NA", ""])


def _is_int(value):
  return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value):
  return _is_int(value) and 0 <= value <= raw_formats.MAX_ID


def _check_row(name, row):
  if name == "gowalla":
    user, seconds, item = row
    assert _is_id(user) and _is_id(item) and _is_int(seconds)
  elif name == "lastfm":
    user, seconds, item = row
    assert isinstance(user, str) and isinstance(item, str) and _is_int(seconds)
    assert user not in raw_formats.PANDAS_MISSING and item not in raw_formats.PANDAS_MISSING
  elif name == "diginetica":
    session, item, timeframe, day = row
    assert _is_id(session) and _is_id(item) and _is_int(day)
    assert _is_id(timeframe) and timeframe <= raw_formats.MAX_TIMEFRAME_MS
  else:
    session, seconds, item = row
    assert _is_id(session) and _is_id(item) and _is_int(seconds)


def _parse(name, path):
  """Rows of `path`, or None after checking the `DataFormatError` names the file and a line."""
  try:
    rows = list(READERS[name](str(path)))
  except DataFormatError as error:
    assert error.path == str(path)
    assert _is_int(error.line) and error.line >= 1, error
    assert str(error).startswith(f"{path}:{error.line}: ")
    return None
  for row in rows:
    _check_row(name, row)
  return rows


@st.composite
def _file_bytes(draw, name):
  """A raw file of `name`'s format with random damage: mutated rows, encodings, gzip, truncation."""
  rows = []
  for _ in range(draw(st.integers(0, 12))):
    row = SAMPLE_ROWS[name]
    for _ in range(draw(st.integers(0, 3))):
      where = draw(st.integers(0, len(row)))
      action = draw(st.sampled_from(["insert", "delete", "replace"]))
      if action == "insert":
        row = row[:where] + draw(st.one_of(TRICKY, st.text(max_size=5))) + row[where:]
      elif action == "delete":
        row = row[:where] + row[where + draw(st.integers(1, 12)):]
      else:
        row = row[:where] + draw(st.text(max_size=8)) + row[where + draw(st.integers(1, 8)):]
    rows.append(row)
  text = HEADERS.get(name, "") * draw(st.integers(0, 1)) + "".join(rows)
  data = text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"])),
                     errors="replace")
  if draw(st.booleans()):
    data = gzip.compress(data)
  if draw(st.booleans()):
    data = data[:draw(st.integers(0, len(data)))]
  return data


@pytest.mark.parametrize("name", sorted(READERS))
@settings(max_examples=50, **SETTINGS)
@given(data=st.binary(max_size=600), compress=st.booleans())
def test_arbitrary_bytes(tmp_path, name, data, compress):
  path = tmp_path / "raw"
  path.write_bytes(gzip.compress(data) if compress else data)
  _parse(name, path)


@pytest.mark.parametrize("name", sorted(READERS))
@settings(max_examples=60, **SETTINGS)
@given(st.data())
def test_damaged_files(tmp_path, name, data):
  path = tmp_path / "raw.gz"
  path.write_bytes(data.draw(_file_bytes(name)))
  _parse(name, path)


@pytest.mark.parametrize("name", sorted(READERS))
@settings(max_examples=30, **SETTINGS)
@given(cut=st.integers(min_value=0, max_value=10**6))
def test_truncated_gzip(tmp_path, name, cut):
  rows = HEADERS.get(name, "") + SAMPLE_ROWS[name] * 300
  whole = gzip.compress(rows.encode())
  cut %= len(whole)  # strictly shorter than the whole stream
  path = tmp_path / "raw.gz"
  path.write_bytes(whole[:cut])
  parsed = _parse(name, path)
  if cut >= 10:  # past the gzip header: the missing end must be reported
    assert parsed is None


@pytest.mark.parametrize("name", sorted(READERS))
def test_huge_lines(tmp_path, name):
  header = HEADERS.get(name, "")
  huge_line = "7" * (raw_formats.MAX_LINE_BYTES + 1) + "\n"
  huge_field = "7" * (200 * 1024) + SAMPLE_ROWS[name]  # under the line limit, over csv's limit
  for body in (huge_line, huge_field):
    path = tmp_path / "raw"
    path.write_text(header + SAMPLE_ROWS[name] + body)
    with pytest.raises(DataFormatError) as caught:
      list(READERS[name](str(path)))
    assert (caught.value.path, caught.value.line) == (str(path), 2 + bool(header))


def _iso(seconds, millis):
  text = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
      "%Y-%m-%dT%H:%M:%S")
  return text + (f".{millis:03d}Z" if millis is not None else "Z")


IDS = st.integers(0, 2**63 - 1)
SECONDS = st.integers(calendar.timegm((1990, 1, 1, 0, 0, 0)),
                      calendar.timegm((2030, 1, 1, 0, 0, 0)))
NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=10)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(IDS, SECONDS, IDS, NAMES), min_size=1, max_size=20))
def test_real_rows_round_trip(tmp_path_factory, rows):
  folder = tmp_path_factory.mktemp("round_trip")
  gowalla = folder / "gowalla.txt.gz"
  gowalla.write_bytes(gzip.compress("".join(
      f"{u}\t{_iso(t, None)}\t-1.5\t2.25\t{i}\n" for u, t, i, _ in rows).encode()))
  assert list(raw_formats.read_gowalla(str(gowalla))) == [(u, t, i) for u, t, i, _ in rows]

  lastfm = folder / "lastfm.tsv"
  lastfm.write_text("".join(f"user_{u}\t{_iso(t, None)}\tmbid-{i}\t\"{n}\"\t\t{n}\n"
                            for u, t, i, n in rows if '"' not in n), encoding="utf-8")
  assert list(raw_formats.read_lastfm(str(lastfm))) == [
      (f"user_{u}", t, f"mbid-{i}") for u, t, i, n in rows if '"' not in n]

  yoochoose = folder / "yoochoose-clicks.dat"
  yoochoose.write_text("".join(f"{u},{_iso(t, i % 1000)},{i},S\n" for u, t, i, _ in rows))
  assert list(raw_formats.read_yoochoose(str(yoochoose))) == [(u, t, i) for u, t, i, _ in rows]

  diginetica = folder / "train-item-views.csv"
  diginetica.write_text(HEADERS["diginetica"] + "".join(
      f"{u};;{i};{t};{_iso(t, None)[:10]}\n" for u, t, i, _ in rows))
  assert list(raw_formats.read_diginetica(str(diginetica))) == [
      (u, i, t, t // 86400) for u, t, i, _ in rows]
