"""Search breadth of an approximate top-K index, tuned to a recall target on real queries.

    index = topk.build_index("scann", candidates)              # candidates float32 [N, dim]
    tuning = index_tuning.tune_search(index, "scann", options, queries, candidates,
                                      min_recall=0.99)         # queries float32 [M, dim]
    tuning.settings   # {"num_leaves_to_search": 86, "num_reordering_candidates": 500}
    tuning.recall     # {20: 0.993}: recall@20 against exact search at that setting

An approximate index (`tfrs_attenmixer.topk`) finds a query's top-k among the candidates it
searches; how many it searches (its search breadth) sets both its recall and its cost. The
breadth is read when the layer is called, so it is tuned on the built index itself, with no
re-indexing, and the layer is left set to the chosen breadth:

| kind | search parameters tuned | candidate values |
|---|---|---|
| `scann` | `num_leaves_to_search`, `num_reordering_candidates` | leaves: the default and 1/16 .. all of `num_leaves`; reordering: the default (at least k), x2, x4, x8, at most N |
| `portable_ann` | `num_partitions_to_search` | the default and 1/16 .. 2/3 of the partitions, while the probed partitions hold fewer than N candidates |

For every candidate value the recall@k of each k in `ks` is measured on `queries` against exact
search over `candidates` (`exact_top_k`). Among the settings reaching `min_recall` at every k,
those that no other reaching setting undercuts on every parameter are timed (batch-1 search,
median over `latency_queries` queries, as is the index's own setting, for comparison) and the
fastest is chosen. A portable_ann search that would score N candidates or more is never tried:
it is no cheaper than brute force.

Errors: `RecallNotReached` (a `ValueError`) when no setting reaches `min_recall`; it carries the
`Tuning` with the best recall reached. `ValueError` for an exact index kind, a `min_recall`
outside [0, 1], or queries and candidates of different widths.
"""

import dataclasses
import math
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrs_attenmixer import topk

SEARCH_PARAMETERS: Dict[str, Tuple[str, ...]] = {
    "scann": ("num_leaves_to_search", "num_reordering_candidates"),
    "portable_ann": ("num_partitions_to_search",),
}
# Shares of the leaves or partitions tried (besides the default breadth).
SEARCH_SHARES = (1 / 16, 1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0)
# Multiples of the default reordering depth tried.
REORDER_FACTORS = (1, 2, 4, 8)


@dataclasses.dataclass
class Trial:
  """One search setting: its parameters, recall@k for each k, and batch-1 latency if timed."""
  settings: Dict[str, int]
  recall: Dict[int, float]
  latency_ms: Optional[float] = None

  def to_dict(self) -> Dict[str, Any]:
    return {"settings": dict(self.settings), "recall": _recall_record(self.recall),
            **({"batch1_latency_ms": round(self.latency_ms, 4)}
               if self.latency_ms is not None else {})}


@dataclasses.dataclass
class Tuning:
  """The outcome of `tune_search`.

  Attributes:
    kind: the index kind.
    min_recall: the target every k in `ks` had to reach.
    ks: the k values measured.
    num_queries: queries the recall was measured on.
    default: the trial of the index's settings before tuning.
    chosen: the chosen trial (timed), or None when no setting reached `min_recall`.
    trials: every trial, in the order they ran.
  """
  kind: str
  min_recall: float
  ks: Tuple[int, ...]
  num_queries: int
  default: Trial
  chosen: Optional[Trial]
  trials: List[Trial]

  @property
  def reached(self) -> bool:
    return self.chosen is not None

  @property
  def settings(self) -> Dict[str, int]:
    return dict((self.chosen or self.best).settings)

  @property
  def recall(self) -> Dict[int, float]:
    return dict((self.chosen or self.best).recall)

  @property
  def best(self) -> Trial:
    """The trial of highest worst-k recall."""
    return max(self.trials, key=lambda trial: min(trial.recall.values()))

  def to_dict(self) -> Dict[str, Any]:
    """A JSON-able record (export.json's `index_recall`)."""
    return {"kind": self.kind, "min_recall": self.min_recall, "reached": self.reached,
            "num_queries": self.num_queries, "ks": list(self.ks),
            "settings": self.settings,
            "recall": _recall_record(self.recall),
            "batch1_latency_ms": (round(self.chosen.latency_ms, 4)
                                  if self.chosen and self.chosen.latency_ms is not None
                                  else None),
            "default": self.default.to_dict(),
            "trials": [trial.to_dict() for trial in self.trials]}


def _recall_record(recall: Mapping[int, float]) -> Dict[str, float]:
  """{"at_<k>": recall@k, rounded} for export.json."""
  return {f"at_{k}": round(value, 5) for k, value in sorted(recall.items())}


class RecallNotReached(ValueError):
  """No search setting reached the recall target; `tuning` holds what was measured."""

  def __init__(self, message: str, tuning: Tuning):
    super().__init__(message)
    self.tuning = tuning


def exact_top_k(queries: np.ndarray, candidates: np.ndarray, k: int,
                block: int = 512) -> np.ndarray:
  """int64 [M, k]: rows of `candidates` [N, dim] of the k highest dot products with each query
  [M, dim], best first (`topk.top_choices`, `block` queries at a time)."""
  candidates = np.asarray(candidates, np.float32)
  return topk.top_choices(np.asarray(queries, np.float32), candidates,
                          min(k, len(candidates)), chunk=block)[0]


def search_ladder(kind: str, options: Mapping[str, Any], num_candidates: int, k: int,
                  partition_size: Optional[int] = None) -> List[Dict[str, int]]:
  """The settings `tune_search` may try, as lists of values per parameter (see the module doc):
  for `scann` a grid (leaves x reordering), for `portable_ann` one list of probes.

  Returns:
    A list of settings dicts, ascending in search breadth per parameter (for `scann`: reordering
    depth outer, leaves inner).
  """
  if kind == "scann":
    leaves = int(options["num_leaves"])
    leaf_values = sorted({int(options["num_leaves_to_search"])} |
                         {max(1, math.ceil(share * leaves)) for share in SEARCH_SHARES})
    default_reorder = max(k, int(options.get("num_reordering_candidates") or 0))
    reorder_values = sorted({min(num_candidates, max(k, default_reorder * factor))
                             for factor in REORDER_FACTORS})
    return [{"num_leaves_to_search": min(value, leaves), "num_reordering_candidates": reorder}
            for reorder in reorder_values for value in leaf_values]
  if kind == "portable_ann":
    partitions = int(min(options["num_partitions"], num_candidates))
    size = partition_size or math.ceil(num_candidates / partitions)
    probes = sorted({min(int(options["num_partitions_to_search"]), partitions)} |
                    {max(1, math.ceil(share * partitions)) for share in SEARCH_SHARES})
    return [{"num_partitions_to_search": value} for value in probes
            if value * size < num_candidates]
  raise ValueError(f"{kind!r} has no search breadth to tune (an exact index, or unknown)")


def apply_settings(layer: tf.keras.layers.Layer, settings: Mapping[str, int]) -> None:
  """Sets the index layer's search parameters; the layer's next trace uses them."""
  for name, value in settings.items():
    setattr(layer, name, int(value))
  reset = getattr(layer, "_reset_tf_function_cache", None)
  if reset is not None:
    reset()


def tune_search(layer: tf.keras.layers.Layer, kind: str, options: Mapping[str, Any],
                queries: np.ndarray, candidates: np.ndarray, ks: Sequence[int] = (20,),
                min_recall: float = 0.99, fixed: Sequence[str] = (),
                latency_queries: int = 100) -> Tuning:
  """Measures the recall of `layer` (an index of `kind` built over `candidates` with `options`)
  and leaves it set to the cheapest search setting reaching `min_recall` at every k in `ks`.

  Args:
    layer: a built `topk.ScaNN` or `topk.PortableANN` (returning candidate rows).
    kind: "scann" or "portable_ann".
    options: the index options it was built with (`topk.default_options` plus overrides).
    queries: float32 [M, dim] query vectors of held-out sessions.
    candidates: float32 [N, dim], the indexed vectors.
    ks: the k values recall is measured at (each at most N).
    min_recall: target in [0, 1]; 0 only measures the index's own setting.
    fixed: search parameters the caller set explicitly: kept, never tuned.
    latency_queries: queries timed one at a time for each setting compared on speed.

  Returns:
    The `Tuning`; the layer is left at its chosen setting.

  Raises:
    RecallNotReached: no setting reaches `min_recall` (the layer is left at its own setting).
    ValueError: see the module doc.
  """
  if kind not in SEARCH_PARAMETERS:
    raise ValueError(f"{kind!r} has no search breadth to tune (an exact index, or unknown)")
  if not 0.0 <= min_recall <= 1.0:
    raise ValueError(f"min_recall must be in [0, 1]; got {min_recall}")
  queries = np.asarray(queries, np.float32)
  candidates = np.asarray(candidates, np.float32)
  if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
    raise ValueError(f"queries {queries.shape} and candidates {candidates.shape} must be "
                     "[M, dim] and [N, dim] of one dim")
  ks = tuple(sorted({min(int(k), len(candidates)) for k in ks}))
  top = max(ks)
  exact = exact_top_k(queries, candidates, top)
  own = {name: int(options[name]) for name in SEARCH_PARAMETERS[kind]
         if options.get(name) is not None}
  if kind == "scann":
    own["num_reordering_candidates"] = max(top, own.get("num_reordering_candidates", 0))
  measured: Dict[Tuple[Tuple[str, int], ...], Trial] = {}
  trials: List[Trial] = []

  def measure(settings: Dict[str, int]) -> Trial:
    key = tuple(sorted(settings.items()))
    if key not in measured:
      apply_settings(layer, settings)
      _, rows = layer(queries, k=top)
      rows = rows.numpy()
      trial = Trial(dict(settings),
                    {k: topk.retrieval_recall(rows[:, :k], exact[:, :k]) for k in ks})
      measured[key] = trial
      trials.append(trial)
    return measured[key]

  def reaches(trial: Trial) -> bool:
    return min(trial.recall.values()) >= min_recall

  default = measure(own)
  if min_recall == 0.0:
    frontier = [default]
  else:
    ladder = [settings for settings in
              search_ladder(kind, options, len(candidates), top, _partition_size(layer))
              if all(settings[name] == own[name] for name in fixed)]
    frontier = _frontier(kind, ladder, measure, reaches)
  tuning = Tuning(kind, min_recall, ks, len(queries), default, None, trials)
  if not frontier:
    apply_settings(layer, own)
    best = tuning.best
    raise RecallNotReached(
        f"no {kind} search setting reaches recall@{'/'.join(map(str, ks))} >= {min_recall} on "
        f"{len(queries)} held-out queries: the best reached "
        f"{min(best.recall.values()):.4f} with {best.settings}", tuning)
  for trial in [*frontier, default] if default not in frontier else frontier:
    apply_settings(layer, trial.settings)
    trial.latency_ms = batch1_latency_ms(layer, queries[:latency_queries], top)
  tuning.chosen = min(frontier, key=lambda trial: trial.latency_ms)
  apply_settings(layer, tuning.chosen.settings)
  return tuning


def _frontier(kind: str, ladder: List[Dict[str, int]], measure, reaches) -> List[Trial]:
  """The reaching settings no other reaching setting undercuts on every parameter, found by
  walking each reordering depth's leaves (or the probes) upwards until the first that reaches,
  each depth stopping below the last depth's answer."""
  if kind == "portable_ann":
    for settings in ladder:
      trial = measure(settings)
      if reaches(trial):
        return [trial]
    return []
  frontier: List[Trial] = []
  bound = math.inf
  for reorder in sorted({s["num_reordering_candidates"] for s in ladder}):
    for settings in ladder:
      if (settings["num_reordering_candidates"] != reorder or
          settings["num_leaves_to_search"] >= bound):
        continue
      trial = measure(settings)
      if reaches(trial):
        frontier.append(trial)
        bound = settings["num_leaves_to_search"]
        break
  return frontier


def batch1_latency_ms(layer: tf.keras.layers.Layer, queries: np.ndarray, k: int) -> float:
  """Median milliseconds of one search of one query (traced once, warmed up, then timed)."""
  search = tf.function(lambda query: layer(query, k=k))
  search(queries[:1])
  times = []
  for row in range(len(queries)):
    query = queries[row:row + 1]
    started = time.perf_counter()
    search(query)[1].numpy()
    times.append((time.perf_counter() - started) * 1000)
  return float(np.median(times))


def _partition_size(layer: tf.keras.layers.Layer) -> Optional[int]:
  size = getattr(layer, "partition_size", None)
  return int(size) if size is not None else None
