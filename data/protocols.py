"""The published preprocessing protocols: a raw file -> time-ordered train and test sessions.

One function per raw dataset, each returning a `SessionSplit` of item-id lists:
- `preprocess_gowalla(path)`, `preprocess_lastfm(path)`: LESSR, twchen/lessr
  `utils/data/preprocess.py` (`preprocess_gowalla_lastfm`);
- `preprocess_diginetica_lessr(path)`: LESSR, the same file (`preprocess_diginetica`);
- `preprocess_diginetica_srgnn(path)`, `preprocess_yoochoose(path, fraction)`: SR-GNN,
  CRIPAC-DIG/SR-GNN `datasets/preprocess.py`.

LESSR, Gowalla and Last.fm: rows with a missing field are dropped; users are numbered in order of
first appearance and rows sorted stably by (user, time); a session starts at a new user or after a
gap strictly longer than the interval (a gap of exactly the interval continues the session);
immediate repeats are removed, then each session is cut to its first 20 events; the 30,000 / 40,000
items with most events are kept (ties: the item that appears first, as pandas' `nlargest`); then,
until a whole round changes nothing, sessions shorter than 2 and items with fewer than 5 events are
dropped. Sessions sorted by end time give the last `int(0.2 * count)` as test. Ties in end time
are broken by session order here (LESSR's pandas quicksort leaves them unspecified).

LESSR, Diginetica: rows sorted stably by (sessionId, time), time = eventdate + timeframe ms;
sessions shorter than 2 dropped, cut to 20 events, items with fewer than 5 events dropped, sessions
shorter than 2 dropped (one pass each). Sessions ending before `max time - 7 days` are training, the
others (ending at the split time or later) test.

LESSR, all three: test events whose item is not in training are dropped, then test sessions shorter
than 2. Items are renumbered 1, 2, ... in order of first appearance in the training rows *as LESSR
holds them* (sorted by user and time, or by session id and time), not in the output order; this is
`pd.factorize(df_train.itemId)` plus one. Train and test sessions are each listed by end time
(test end times after the unseen items are dropped; ties in session order).

SR-GNN, Diginetica and Yoochoose: events are grouped by session id (Diginetica: within a session,
sorted stably by timeframe; Yoochoose: file order); a session's date is that of its last row in the
file (Diginetica: the day, without timeframe; Yoochoose: the time to the second). Sessions of one
event are dropped, item counts are taken, items seen fewer than 5 times are dropped from each
session and sessions left shorter than 2 are dropped (one pass). With `split = latest date - 7 days`
(Yoochoose: 1 day), sessions dated before the split are training, after it test, and sessions dated
exactly at the split are dropped (SR-GNN's `<` and `>`). Both lists are sorted stably by date (ties
in order of first appearance in the file); items are renumbered 1, 2, ... in order of first
appearance in the sorted training sessions; test items never seen in training are dropped, then test
sessions shorter than 2. No truncation, no removal of repeats. Dates are UTC here; SR-GNN used local
time (`time.mktime`), which gives the same split unless a daylight-saving change falls inside the
test window (it does not for either dataset).

Yoochoose 1/`fraction`: SR-GNN lists each training session's examples longest prefix first and keeps
the last `int(examples / fraction)` examples. `SessionSplit.train` holds the sessions whose prefix
examples are exactly those: the sessions after the cut whole, and the session the cut falls in
truncated to its first `r + 1` events when only its `r` shortest prefixes are kept. Item ids stay
those of the full training set (so some test items never occur in the kept training sessions, as in
SR-GNN); the test set is the full one.
"""

import dataclasses
from array import array
from typing import Iterable, List, Optional, Tuple

import numpy as np
from absl import logging

from data import raw_formats

Session = List[int]

DAY_SECONDS = 86400
MAX_SESSION_LENGTH = 20          # LESSR
MIN_SESSION_LENGTH = 2
MIN_ITEM_SUPPORT = 5
LESSR_TEST_FRACTION = 0.2        # Gowalla and Last.fm
GOWALLA_INTERVAL_SECONDS = DAY_SECONDS
GOWALLA_TOP_ITEMS = 30000
LASTFM_INTERVAL_SECONDS = 8 * 3600
LASTFM_TOP_ITEMS = 40000
DIGINETICA_TEST_DAYS = 7         # LESSR and SR-GNN
YOOCHOOSE_TEST_DAYS = 1


@dataclasses.dataclass(frozen=True)
class SessionSplit:
  """Preprocessed sessions, each a list of item ids (1-based), in time order (oldest first)."""
  train: List[Session]
  test: List[Session]


# ----------------------------------------------------------------------------------------------
# Shared helpers on click rows sorted so that each session's rows are contiguous.


@dataclasses.dataclass(frozen=True)
class _Clicks:
  """Click rows, one session's rows contiguous and in click order. All arrays `[num_rows]` int64."""
  session: np.ndarray
  item: np.ndarray
  time: np.ndarray

  def select(self, mask: np.ndarray) -> "_Clicks":
    return _Clicks(self.session[mask], self.item[mask], self.time[mask])

  def starts(self) -> np.ndarray:
    """`[num_sessions]` index of each session's first row."""
    first = np.ones(len(self.session), bool)
    first[1:] = self.session[1:] != self.session[:-1]
    return np.flatnonzero(first)

  def sizes(self) -> np.ndarray:
    """`[num_sessions]` number of rows of each session."""
    return np.diff(np.append(self.starts(), len(self.session)))

  def end_times(self) -> np.ndarray:
    """`[num_sessions]` latest time of each session."""
    return np.maximum.reduceat(self.time, self.starts()) if len(self.time) else self.time

  def without_short_sessions(self) -> "_Clicks":
    sizes = self.sizes()
    return self.select(np.repeat(sizes, sizes) >= MIN_SESSION_LENGTH)

  def without_rare_items(self) -> "_Clicks":
    return self.select(np.bincount(self.item)[self.item] >= MIN_ITEM_SUPPORT)

  def truncated(self) -> "_Clicks":
    """Each session's first `MAX_SESSION_LENGTH` rows."""
    sizes = self.sizes()
    position = np.arange(len(self.session)) - np.repeat(self.starts(), sizes)
    return self.select(position < MAX_SESSION_LENGTH)

  def split_sessions(self, is_test: np.ndarray) -> Tuple["_Clicks", "_Clicks"]:
    """`is_test`: `[num_sessions]` bool. Returns the (train, test) rows."""
    rows = np.repeat(is_test, self.sizes())
    return self.select(~rows), self.select(rows)


def _read_columns(rows: Iterable[Tuple], width: int, coded: Tuple[int, ...], path: str):
  """Streams rows of `width` values into int64 columns.

  Args:
    rows: tuples of `width` values.
    width: the number of values per row.
    coded: the columns whose values (any hashable) are replaced by codes 0, 1, ... in order of
      first appearance; the other columns must hold integers.
    path: the raw file, for the error when it holds no rows.

  Returns:
    `(columns, num_codes)`: `width` arrays `[num_rows]`, and the number of codes of each column
    (`{column: count}`).
  """
  columns = [array("q") for _ in range(width)]
  indexes = [{} if column in coded else None for column in range(width)]
  appends = [column.append for column in columns]
  for row in rows:
    for append, value, index in zip(appends, row, indexes):
      append(value if index is None else index.setdefault(value, len(index)))
  if not columns[0]:
    raise ValueError(f"{path}: no events to preprocess")
  return ([np.frombuffer(column, np.int64) for column in columns],
          {column: len(indexes[column]) for column in coded})


def _read_diginetica(path: str):
  """`(session, item code, timeframe ms, day)` columns `[num_rows]` and the number of items."""
  columns, num_codes = _read_columns(raw_formats.read_diginetica(path), 4, (1,), path)
  return columns, num_codes[1]


def _first_appearance_ids(items: np.ndarray, size: int) -> np.ndarray:
  """A lookup table `[size]`: item -> 1 + rank of its first appearance in `items`; absent -> 0."""
  unique, first = np.unique(items, return_index=True)
  table = np.zeros(size, np.int64)
  table[unique[np.argsort(first, kind="stable")]] = np.arange(1, len(unique) + 1)
  return table


def _to_lists(flat: np.ndarray, sizes: np.ndarray) -> List[Session]:
  """Splits `flat` `[sum(sizes)]` into consecutive lists of `sizes` `[num_sessions]` items."""
  values = flat.tolist()
  ends = np.cumsum(sizes).tolist()
  return [values[end - size:end] for end, size in zip(ends, sizes.tolist())]


def _finish(name: str, path: str, split: SessionSplit) -> SessionSplit:
  """Checks the split has training sessions, logs its size and returns it."""
  if not split.train:
    raise ValueError(f"{path}: no training sessions left after preprocessing ({name})")
  logging.info("%s: %d training sessions (%d clicks), %d test sessions (%d clicks)", name,
               len(split.train), sum(map(len, split.train)), len(split.test),
               sum(map(len, split.test)))
  return split


# ----------------------------------------------------------------------------------------------
# LESSR.


def _lessr_save(train: _Clicks, test: _Clicks, num_items: int) -> SessionSplit:
  """LESSR's `save_dataset`: unseen test items out, short test sessions out, renumber, order."""
  in_train = np.zeros(num_items, bool)
  in_train[train.item] = True
  test = test.select(in_train[test.item]).without_short_sessions()
  ids = _first_appearance_ids(train.item, num_items)

  def by_end_time(clicks: _Clicks) -> List[Session]:
    sessions = _to_lists(ids[clicks.item], clicks.sizes())
    return [sessions[k] for k in np.argsort(clicks.end_times(), kind="stable").tolist()]

  return SessionSplit(by_end_time(train), by_end_time(test))


def _lessr_user_sessions(events: Iterable[Tuple], path: str, interval: int,
                         top_items: int) -> SessionSplit:
  """LESSR's `preprocess_gowalla_lastfm` on `(user, seconds, item)` events."""
  (user, time, item), num_codes = _read_columns(events, 3, (0, 2), path)
  num_items = num_codes[2]
  order = np.lexsort((time, user))
  user, time, item = user[order], time[order], item[order]

  new_session = np.ones(len(user), bool)
  new_session[1:] = (user[1:] != user[:-1]) | (time[1:] - time[:-1] > interval)
  repeat = np.zeros(len(user), bool)
  repeat[1:] = ~new_session[1:] & (item[1:] == item[:-1])
  clicks = _Clicks(np.cumsum(new_session) - 1, item, time).select(~repeat).truncated()
  del user, time, item

  unique, first, counts = np.unique(clicks.item, return_index=True, return_counts=True)
  top = np.zeros(num_items, bool)
  top[unique[np.lexsort((first, -counts))[:top_items]]] = True
  clicks = clicks.select(top[clicks.item])

  while True:  # LESSR's filter_until_all_long_and_freq
    filtered = clicks.without_short_sessions().without_rare_items()
    if len(filtered.item) == len(clicks.item):
      break
    clicks = filtered

  num_sessions = len(clicks.starts())
  num_test = int(num_sessions * LESSR_TEST_FRACTION)
  if num_test == 0:
    raise ValueError(f"{path}: {num_sessions} sessions left after filtering; the 80/20 split "
                     "needs at least 5")
  is_test = np.zeros(num_sessions, bool)
  is_test[np.argsort(clicks.end_times(), kind="stable")[num_sessions - num_test:]] = True
  return _lessr_save(*clicks.split_sessions(is_test), num_items)


def preprocess_gowalla(path: str) -> SessionSplit:
  """SNAP Gowalla check-ins -> LESSR sessions (1-day gaps, top 30,000 locations, 80/20 by time)."""
  return _finish("gowalla", path, _lessr_user_sessions(
      raw_formats.read_gowalla(path), path, GOWALLA_INTERVAL_SECONDS, GOWALLA_TOP_ITEMS))


def preprocess_lastfm(path: str) -> SessionSplit:
  """Last.fm-1K listens (artist ids) -> LESSR sessions (8-hour gaps, top 40,000 artists, 80/20)."""
  return _finish("lastfm", path, _lessr_user_sessions(
      raw_formats.read_lastfm(path), path, LASTFM_INTERVAL_SECONDS, LASTFM_TOP_ITEMS))


def preprocess_diginetica_lessr(path: str) -> SessionSplit:
  """CIKM Cup 2016 item views -> LESSR Diginetica sessions (last 7 days = test)."""
  (session, item, timeframe, day), num_items = _read_diginetica(path)
  time = day * (DAY_SECONDS * 1000) + timeframe
  order = np.lexsort((time, session))
  clicks = _Clicks(session[order], item[order], time[order])
  clicks = clicks.without_short_sessions().truncated().without_rare_items().without_short_sessions()
  if not len(clicks.item):
    raise ValueError(f"{path}: no sessions left after filtering")
  split_time = clicks.time.max() - DIGINETICA_TEST_DAYS * DAY_SECONDS * 1000
  return _finish("diginetica, LESSR", path, _lessr_save(
      *clicks.split_sessions(clicks.end_times() >= split_time), num_items))


# ----------------------------------------------------------------------------------------------
# SR-GNN.


def _srgnn_sessions(path: str, session_raw: np.ndarray, item: np.ndarray, date: np.ndarray,
                    sort_key: Optional[np.ndarray], test_days: int, num_items: int):
  """SR-GNN's preprocessing on click rows in file order (all arrays `[num_rows]` int64).

  Returns:
    `(train_items, train_sizes, test_items, test_sizes)`: each split's renumbered item ids
    concatenated in session order `[clicks]`, and the session lengths `[num_sessions]`.
  """
  num_rows = len(session_raw)
  unique, first, inverse = np.unique(session_raw, return_index=True, return_inverse=True)
  _, last_reversed = np.unique(session_raw[::-1], return_index=True)
  rank = np.empty(len(unique), np.int64)  # sessions numbered in order of first appearance
  rank[np.argsort(first, kind="stable")] = np.arange(len(unique))
  code = rank[inverse.reshape(-1)]
  session_date = np.empty(len(unique), np.int64)
  session_date[rank] = date[num_rows - 1 - last_reversed]
  del unique, first, inverse, last_reversed, rank

  order = (np.argsort(code, kind="stable") if sort_key is None else np.lexsort((sort_key, code)))
  code, item = code[order], item[order]
  del order
  keep = np.bincount(code)[code] > 1
  support = np.bincount(item[keep], minlength=num_items)
  keep &= support[item] >= MIN_ITEM_SUPPORT
  sizes = np.bincount(code[keep], minlength=len(session_date))
  keep &= sizes[code] >= MIN_SESSION_LENGTH
  item = item[keep]
  sizes[sizes < MIN_SESSION_LENGTH] = 0
  offsets = np.cumsum(sizes) - sizes
  valid = sizes > 0
  if not valid.any():
    raise ValueError(f"{path}: no sessions left after filtering")

  split_date = session_date[valid].max() - test_days * DAY_SECONDS

  def sessions_in_date_order(selected: np.ndarray):
    codes = np.flatnonzero(selected)
    codes = codes[np.argsort(session_date[codes], kind="stable")]
    lengths = sizes[codes]
    rows = np.repeat(offsets[codes] - (np.cumsum(lengths) - lengths), lengths)
    return item[rows + np.arange(len(rows))], lengths

  train_items, train_sizes = sessions_in_date_order(valid & (session_date < split_date))
  test_items, test_sizes = sessions_in_date_order(valid & (session_date > split_date))
  ids = _first_appearance_ids(train_items, num_items)
  train_items, test_items = ids[train_items], ids[test_items]

  test_session = np.repeat(np.arange(len(test_sizes)), test_sizes)
  seen = test_items > 0
  test_sizes = np.bincount(test_session[seen], minlength=len(test_sizes))
  seen &= test_sizes[test_session] >= MIN_SESSION_LENGTH
  test_sizes = test_sizes[test_sizes >= MIN_SESSION_LENGTH]
  return train_items, train_sizes, test_items[seen], test_sizes


def preprocess_diginetica_srgnn(path: str) -> SessionSplit:
  """CIKM Cup 2016 item views -> SR-GNN Diginetica sessions (last 7 days = test, no truncation)."""
  (session, item, timeframe, day), num_items = _read_diginetica(path)
  train_items, train_sizes, test_items, test_sizes = _srgnn_sessions(
      path, session, item, day * DAY_SECONDS, timeframe, DIGINETICA_TEST_DAYS, num_items)
  return _finish("diginetica, SR-GNN", path, SessionSplit(_to_lists(train_items, train_sizes),
                                                           _to_lists(test_items, test_sizes)))


def preprocess_yoochoose(path: str, fraction: int = 64) -> SessionSplit:
  """Yoochoose clicks -> SR-GNN sessions: last day = test, most recent 1/`fraction` of examples.

  Args:
    path: `yoochoose-clicks.dat` (or `.gz`).
    fraction: 64 or 4 in the literature; any positive integer.

  Returns:
    The training sessions whose prefix examples are the kept examples (see the module docstring
    for the one session that may be truncated at the cut), and the full test set.
  """
  if not isinstance(fraction, int) or fraction < 1:
    raise ValueError(f"fraction must be a positive integer, not {fraction!r}")
  (session, seconds, item), num_codes = _read_columns(raw_formats.read_yoochoose(path), 3, (2,),
                                                      path)
  train_items, train_sizes, test_items, test_sizes = _srgnn_sessions(
      path, session, item, seconds, None, YOOCHOOSE_TEST_DAYS, num_codes[2])
  del session, seconds, item

  examples = train_sizes - 1
  num_kept = int(examples.sum()) // fraction
  if num_kept == 0:
    raise ValueError(f"{path}: {examples.sum()} training examples are too few to keep 1/{fraction}")
  examples_from = np.cumsum(examples[::-1])[::-1]  # examples in sessions k, k+1, ...
  cut = int(np.flatnonzero(examples_from >= num_kept)[-1])
  kept_of_cut = num_kept - int(examples_from[cut] - examples[cut])  # its shortest prefixes
  train = _to_lists(train_items[int(train_sizes[:cut].sum()):], train_sizes[cut:])
  train[0] = train[0][:kept_of_cut + 1]
  return _finish(f"yoochoose 1/{fraction}", path,
                 SessionSplit(train, _to_lists(test_items, test_sizes)))
