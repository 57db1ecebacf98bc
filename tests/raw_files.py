"""Raw dataset files in their real formats, for the tests of `data.protocols` and of the
event-log importer's presets (`tests/test_raw_preprocessing.py`, `tests/test_events.py`)."""

import datetime
import gzip

DAY = 86400
T0 = 1262304000  # 2010-01-01T00:00:00Z


def iso(seconds, millis=None):
  text = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
      "%Y-%m-%dT%H:%M:%S")
  return text + (f".{millis:03d}Z" if millis is not None else "Z")


def write(path, text):
  """Writes `text` to `path`, gzip-compressed when the name ends in .gz."""
  data = text.encode("utf-8")
  with (gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb")) as out:
    out.write(data)
  return str(path)


def gowalla_file(path, events):
  """SNAP layout: user, time, latitude, longitude, location; `events` are (user, seconds, item)."""
  return write(path, "".join(f"{u}\t{iso(t)}\t30.2359091167\t-97.7951395833\t{i}\n"
                             for u, t, i in events))


def lastfm_file(path, events):
  """Last.fm-1K layout: user, time, artist id, artist name, track id, track name."""
  return write(path, "".join(f"user_{u:06d}\t{iso(t)}\t{i}\tArtist \"{i}\"\t\tTrack\n"
                             for u, t, i in events))


def diginetica_file(path, views, header="sessionId;userId;itemId;timeframe;eventdate"):
  """CIKM Cup layout; `views` are (session, item, timeframe ms, 'YYYY-MM-DD')."""
  return write(path, header + "\n" + "".join(f"{s};NA;{i};{tf};{d}\n" for s, i, tf, d in views))


def yoochoose_file(path, clicks):
  """RecSys 2015 layout, no header; `clicks` are (session, seconds, item[, millis])."""
  return write(path, "".join(f"{c[0]},{iso(c[1], c[3] if len(c) > 3 else 123)},{c[2]},0\n"
                             for c in clicks))
