"""Top-K indexes over a candidate table: exact, ScaNN, and a portable inverted-file index.

Every index is a TensorFlow Recommenders retrieval layer (`tfrs.layers.factorized_top_k.TopK`),
so they share TFRS's interface and plug into `tfrs.metrics.FactorizedTopK`:

    index = build_index("portable_ann", candidates)   # candidates float32 [N, dim]
    scores, rows = index(queries, k=20)               # queries [batch, dim] -> [batch, k] twice

`scores` are dot products `query . candidate` (float32, best first); `rows` are the int32 row
numbers of `candidates` (or the `identifiers` given to `index`). `k` may be a Python int or an
int32 scalar tensor, and must be at most N.

| kind | layer | search | ops |
|---|---|---|---|
| `brute_force` | `BruteForce` (TFRS's, with the table stored `[dim, N]`) | exact: one matmul + `tf.math.top_k` | stock TensorFlow |
| `scann` | `ScaNN` (TFRS's ScaNN with a fixed-width result) | k-means tree, asymmetric hashing, exact reordering | ScaNN custom ops: load only after `import scann` |
| `portable_ann` | `PortableANN` | k-means partitions (inverted file), exact scoring inside the probed partitions | stock TensorFlow (any TF Serving) |

The approximate indexes return exactly `k` columns; when their search finds fewer than `k`
candidates the missing entries have score `-inf` and row -1 (identifier -1, or "" for string
identifiers). `default_options(kind, num_candidates)` sizes them for a catalogue; the choices and
their measured recall are in `results/serving_index_recall.md`.
"""

import inspect
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

INDEX_KINDS = ("brute_force", "scann", "portable_ann")

# The private members of TFRS's top-K layers (tensorflow_recommenders 0.7.7) that the layers here
# override, call or read: `BruteForce` overrides `_compute_score` (which TFRS's `call` applies to
# its `_candidates`) and sets `_candidates` / `_identifiers` in `index`; `ScaNN.call` reads the
# searcher and options TFRS's `index` and constructor store; every layer reads `_k` and calls
# `_reset_tf_function_cache` after indexing. `check_tfrs_members` (run by the tests) fails,
# naming the member, when a TFRS release renames or drops one.
TFRS_PRIVATE_MEMBERS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "TopK": {"methods": ("_reset_tf_function_cache", "_compute_score"), "sets": ("_k",)},
    "BruteForce": {"sets": ("_candidates", "_identifiers"),
                   "call_reads": ("_compute_score", "_candidates", "_identifiers", "_k")},
    "ScaNN": {"sets": ("_k", "_serialized_searcher", "_parallelize_batch_searches",
                       "_identifiers")},
}


def check_tfrs_members(module: Any = tfrs.layers.factorized_top_k) -> None:
  """Checks that TFRS's top-K classes still have the private members listed in
  `TFRS_PRIVATE_MEMBERS`: methods defined, attributes assigned in their source, and read by
  `BruteForce.call`.

  Raises:
    AttributeError: naming the class and the member that is gone.
  """
  for class_name, members in TFRS_PRIVATE_MEMBERS.items():
    cls = getattr(module, class_name, None)
    if cls is None:
      raise AttributeError(f"tensorflow_recommenders has no {class_name} top-K layer any more")
    for name in members.get("methods", ()):
      if not callable(getattr(cls, name, None)):
        raise AttributeError(f"tensorflow_recommenders' {class_name} has no method {name}, "
                             "which tfrs_attenmixer.topk overrides or calls")
    source = "".join(inspect.getsource(klass) for klass in cls.__mro__
                     if klass.__module__ == cls.__module__)
    for name in members.get("sets", ()):
      if f"self.{name} = " not in source:
        raise AttributeError(f"tensorflow_recommenders' {class_name} no longer sets {name}, "
                             "which tfrs_attenmixer.topk reads or replaces")
    call_source = inspect.getsource(cls.call)
    for name in members.get("call_reads", ()):
      if f"self.{name}" not in call_source:
        raise AttributeError(f"tensorflow_recommenders' {class_name}.call no longer uses {name}, "
                             "which tfrs_attenmixer.topk overrides or sets")
# Catalogue size up to which the default indexes search a fixed share of their leaves.
_REFERENCE_ITEMS = 30_000


def default_options(kind: str, num_candidates: int) -> Dict[str, Any]:
  """Index parameters for a catalogue of `num_candidates` items.

  Tuned for recall@20 >= 0.99 on a trained Gowalla model (29,510 items, dim 256; see
  `results/serving_index_recall.md`), whose session vectors need about half of the catalogue
  searched for that recall:

  - `scann`: sqrt(N) leaves (at most 2,000), searching 2/3 of them, then exact reordering of
    500 candidates (scored with asymmetric hashing, so still faster than brute force).
  - `portable_ann`: 2 sqrt(N) partitions (at most 4,000), probing half of them.

  Above Gowalla's size the number of leaves searched stays at its Gowalla value (116 and 174):
  a query's top-20 lies in a number of leaves set by the model's geometry, not by N, so the
  searched share shrinks as the leaves multiply (recall@20 on the synthetic benchmark: ScaNN
  0.937 at 1M items and 0.79 at 2.3M, portable_ann 0.990 and 0.925). The exporter measures the
  recall on each model's held-out sessions and tunes the search breadth to a target
  (`tfrs_attenmixer.index_tuning`).
  """
  if kind == "brute_force":
    return {}
  reference = math.sqrt(_REFERENCE_ITEMS)
  if kind == "scann":
    leaves = int(min(max(round(math.sqrt(num_candidates)), 1), 2000))
    return dict(num_leaves=leaves,
                num_leaves_to_search=math.ceil(2 / 3 * min(leaves, reference)),
                num_reordering_candidates=min(num_candidates, 500))
  if kind == "portable_ann":
    partitions = int(min(max(round(2 * math.sqrt(num_candidates)), 1), 4000))
    return dict(num_partitions=partitions,
                num_partitions_to_search=math.ceil(0.5 * min(partitions, 2 * reference)))
  raise ValueError(f"index must be one of {', '.join(INDEX_KINDS)}; got {kind!r}")


def build_index(kind: str, candidates: tf.Tensor, identifiers: Optional[tf.Tensor] = None,
                k: int = 20, **options: Any) -> tfrs.layers.factorized_top_k.TopK:
  """An index of `kind` over `candidates` [N, dim], returning `k` results by default.

  `identifiers` [N], if given, are returned instead of row numbers; `options` (constructor
  arguments of the index layer) override `default_options(kind, N)`.
  """
  options = {**default_options(kind, int(candidates.shape[0])), **options}
  if kind == "brute_force":
    layer = BruteForce(k=k, **options)
  elif kind == "scann":
    layer = ScaNN(k=k, **options)
  else:
    layer = PortableANN(k=k, **options)
  return layer.index(candidates, identifiers)


def retrieval_recall(approximate: np.ndarray, exact: np.ndarray) -> float:
  """Mean over rows of |approximate row & exact row| / |exact row|: recall of a top-k search."""
  approximate, exact = np.asarray(approximate), np.asarray(exact)
  found = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approximate, exact)]
  return float(np.sum(found) / exact.size)


class BruteForce(tfrs.layers.factorized_top_k.BruteForce):
  """Exact top-K: TFRS's `BruteForce` with the candidates stored transposed, `[dim, N]`.

  The score product `queries [batch, dim] x candidates [dim, N]` then reads the table in the
  order the product walks it, which is faster than TFRS's `[N, dim]` table multiplied with
  `transpose_b=True` (`benchmarks.serving` times both forms as the search's floor; figures in
  results/).
  """

  def index(self, candidates: tf.Tensor,
            identifiers: Optional[tf.Tensor] = None) -> "BruteForce":
    candidates = tf.convert_to_tensor(candidates)
    if candidates.shape.rank != 2:
      raise ValueError(f"The candidates tensor must be 2D (got {candidates.shape}).")
    if identifiers is None:
      identifiers = tf.range(candidates.shape[0])
    identifiers = tf.convert_to_tensor(identifiers)
    if identifiers.shape[0] != candidates.shape[0]:
      raise ValueError(f"The candidates and identifiers tensors must have the same number of "
                       f"rows (got {candidates.shape[0]} and {identifiers.shape[0]}).")
    # Each variable starts from its tensor itself: no zero-filled table assigned after, and no
    # block-wise slice assignment (which switches a variable to copying its whole table on
    # every read).
    self._identifiers = self._constant("identifiers", identifiers)
    self._candidates = self._constant("candidates_transposed", tf.transpose(candidates))
    self._reset_tf_function_cache()
    return self

  def _constant(self, name: str, value: tf.Tensor) -> tf.Variable:
    return self.add_weight(name=name, dtype=value.dtype, shape=value.shape, trainable=False,
                           initializer=lambda shape, dtype=None, **kwargs: value)

  def _compute_score(self, queries: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """Scores [batch, N] of queries [batch, dim] against the transposed table [dim, N]."""
    return tf.matmul(queries, candidates)


class ScaNN(tfrs.layers.factorized_top_k.ScaNN):
  """TFRS's ScaNN layer that always returns `k` results (see the module doc).

  TFRS's layer returns at most `num_reordering_candidates` columns; this one reorders at least
  `k` candidates and pads a search that found fewer than `k` items. The search breadth,
  `num_leaves_to_search` and `num_reordering_candidates`, are attributes read when the layer is
  called (traced), so they can be tuned without rebuilding the index. Constructor arguments are
  TFRS's; a SavedModel holding this layer needs `SaveOptions(namespace_whitelist=["Scann"])`.
  """

  def __init__(self, query_model: Optional[tf.keras.Model] = None, k: int = 10,
               num_leaves: int = 100, num_leaves_to_search: int = 10,
               num_reordering_candidates: Optional[int] = None, **kwargs):
    super().__init__(query_model=query_model, k=k, num_leaves=num_leaves,
                     num_leaves_to_search=num_leaves_to_search,
                     num_reordering_candidates=num_reordering_candidates, **kwargs)
    self.num_leaves_to_search = num_leaves_to_search
    self.num_reordering_candidates = num_reordering_candidates

  def call(self, queries: tf.Tensor, k: Optional[int] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """queries [batch, dim] -> (scores [batch, k], rows or identifiers [batch, k])."""
    k = self._k if k is None else k
    if self._serialized_searcher is None:
      raise ValueError("The `index` method must be called first to create the retrieval index.")
    if self.query_model is not None:
      queries = self.query_model(queries)
    from scann.scann_ops.py import scann_ops  # pylint: disable=g-import-not-at-top
    searcher = scann_ops.searcher_from_module(self._serialized_searcher)
    reorder = tf.maximum(k, self.num_reordering_candidates or 0)
    search = (searcher.search_batched_parallel if self._parallelize_batch_searches else
              searcher.search_batched)
    result = search(queries, final_num_neighbors=k, pre_reorder_num_neighbors=reorder,
                    leaves_to_search=self.num_leaves_to_search)
    # Rows of a batch search that found fewer items than others end in NaN scores.
    found = ~tf.math.is_nan(result.distances)
    scores, rows = _pad_to_k(tf.where(found, result.distances, -np.inf),
                             tf.where(found, result.indices, -1), k)
    return scores, _identify(rows, self._identifiers)


class PortableANN(tfrs.layers.factorized_top_k.TopK):
  """An approximate inverted-file index made only of stock TensorFlow ops.

  Indexing (NumPy, once): spherical k-means of the candidates into `num_partitions` partitions,
  then a balanced assignment (each candidate to its best-scoring centroid that still has room;
  at most `max_partition_factor` x the mean size), stored padded to one size `S`:
  `partition_vectors` [P * S, dim] (partition p in rows p * S .. p * S + S - 1) and
  `partition_rows` [P, S] (candidate row, -1 = padding).

  Search: centroid scores `queries @ centroids^T` [batch, P] -> the `num_partitions_to_search`
  (n) best partitions -> exact dot products with their vectors -> `tf.math.top_k` over the n * S
  scores. The dot products are computed one of two ways, with identical results:
  - small batches (batch * n < P): for each probe, a gather of the partition's vectors
    [batch, S, dim] and a batched mat-vec: `n * S * dim` multiply-adds per query instead of
    brute force's `N * dim`;
  - larger batches, whose probes together cover the catalogue more than once: one matmul with
    all partitions [batch, P * S], then a gather of the probed partitions' scores. This costs
    about a brute-force search (the gathers would cost more).
  So the index pays off for large catalogues and small batches. No custom ops, no
  `py_function`: a SavedModel holding it loads in stock TensorFlow Serving.
  `num_partitions_to_search` is an attribute read when the layer is called (traced), so it can
  be tuned without re-indexing.
  """

  def __init__(self,
               query_model: Optional[tf.keras.Model] = None,
               k: int = 10,
               num_partitions: int = 100,
               num_partitions_to_search: int = 10,
               max_partition_factor: float = 1.5,
               kmeans_iterations: int = 10,
               kmeans_sample_size: int = 100_000,
               seed: int = 0,
               name: Optional[str] = None):
    """Initialises the layer.

    Args:
      query_model: optional Keras model mapping raw query features to query vectors.
      k: default number of results.
      num_partitions: P, the number of k-means partitions (capped at N).
      num_partitions_to_search: n, partitions probed per query (capped at P).
      max_partition_factor: the largest partition holds at most this times N / P candidates
        (>= 1); it bounds the padding, and so the memory and time of a search.
      kmeans_iterations: Lloyd iterations of the k-means.
      kmeans_sample_size: candidates (sampled) the k-means is trained on.
      seed: seed of the k-means sampling and initialisation.
      name: layer name.
    """
    super().__init__(k=k, name=name)
    if num_partitions < 1 or num_partitions_to_search < 1:
      raise ValueError("num_partitions and num_partitions_to_search must be >= 1; got "
                       f"{num_partitions} and {num_partitions_to_search}")
    if max_partition_factor < 1:
      raise ValueError(f"max_partition_factor must be >= 1; got {max_partition_factor}")
    self.query_model = query_model
    self._num_partitions = num_partitions
    self.num_partitions_to_search = num_partitions_to_search
    self._max_partition_factor = max_partition_factor
    self._kmeans_iterations = kmeans_iterations
    self._kmeans_sample_size = kmeans_sample_size
    self._seed = seed
    self._centroids = None
    self._partition_vectors = None
    self._partition_rows = None
    self._identifiers = None

  def index(self, candidates: tf.Tensor,
            identifiers: Optional[tf.Tensor] = None) -> "PortableANN":
    """Partitions `candidates` [N, dim]; `identifiers` [N] are returned instead of rows."""
    vectors = np.asarray(candidates, np.float32)
    if vectors.ndim != 2 or not vectors.shape[0]:
      raise ValueError(f"candidates must be a non-empty [N, dim] matrix; got {vectors.shape}")
    if identifiers is not None and identifiers.shape[0] != vectors.shape[0]:
      raise ValueError(f"{identifiers.shape[0]} identifiers for {vectors.shape[0]} candidates")
    num_partitions = min(self._num_partitions, vectors.shape[0])
    centroids = spherical_kmeans(vectors, num_partitions, self._kmeans_iterations,
                                 self._kmeans_sample_size, self._seed)
    capacity = math.ceil(self._max_partition_factor * vectors.shape[0] / num_partitions)
    assignment = balanced_assignment(vectors, centroids, capacity)
    rows, vectors_padded = _pad_partitions(vectors, assignment, num_partitions)

    def weight(name, value):
      variable = self.add_weight(name=name, shape=value.shape, dtype=value.dtype,
                                 initializer=tf.keras.initializers.Zeros(), trainable=False)
      variable.assign(value)
      return variable

    self._centroids = weight("centroids", centroids)
    self._partition_vectors = weight("partition_vectors", vectors_padded)
    self._partition_rows = weight("partition_rows", rows)
    if identifiers is not None:
      identifiers = tf.convert_to_tensor(identifiers)
      self._identifiers = self.add_weight(
          name="identifiers", dtype=identifiers.dtype, shape=identifiers.shape,
          initializer=tf.keras.initializers.Constant(tf.zeros((), identifiers.dtype)),
          trainable=False)
      self._identifiers.assign(identifiers)
    self._reset_tf_function_cache()
    return self

  def call(self, queries: tf.Tensor, k: Optional[int] = None) -> Tuple[tf.Tensor, tf.Tensor]:
    """queries [batch, dim] -> (scores [batch, k], rows or identifiers [batch, k])."""
    k = self._k if k is None else k
    if self._centroids is None:
      raise ValueError("The `index` method must be called first to create the retrieval index.")
    if self.query_model is not None:
      queries = self.query_model(queries)
    queries = tf.convert_to_tensor(queries, tf.float32)
    num_partitions, size = self._partition_rows.shape
    probes = min(self.num_partitions_to_search, num_partitions)
    _, partitions = tf.math.top_k(tf.matmul(queries, self._centroids, transpose_b=True), probes)

    def by_gather():
      slots = tf.range(size)
      return tf.concat([
          tf.linalg.matvec(
              tf.gather(self._partition_vectors, partitions[:, probe, None] * size + slots),
              queries)
          for probe in range(probes)], axis=1)

    def by_matmul():
      scores = tf.matmul(queries, self._partition_vectors, transpose_b=True)
      scores = tf.gather(tf.reshape(scores, [-1, num_partitions, size]), partitions,
                         batch_dims=1)
      return tf.reshape(scores, [-1, probes * size])

    scores = tf.cond(tf.shape(queries)[0] * probes < num_partitions, by_gather, by_matmul)
    rows = tf.reshape(tf.gather(self._partition_rows, partitions), [-1, probes * size])
    scores = tf.where(rows >= 0, scores, -np.inf)
    top_scores, positions = tf.math.top_k(scores, tf.minimum(k, probes * size))
    top_scores, top_rows = _pad_to_k(top_scores, tf.gather(rows, positions, batch_dims=1), k)
    return top_scores, _identify(top_rows, self._identifiers)

  @property
  def partition_size(self) -> Optional[int]:
    """S, the padded size of every partition (None before `index`)."""
    return None if self._partition_rows is None else int(self._partition_rows.shape[1])

  def is_exact(self) -> bool:
    return False


def spherical_kmeans(vectors: np.ndarray, num_clusters: int, iterations: int = 10,
                     sample_size: int = 100_000, seed: int = 0) -> np.ndarray:
  """Unit-norm centroids [num_clusters, dim] of `vectors` [N, dim] under dot-product assignment.

  Trained on a sample of at most `sample_size` vectors; an emptied cluster is re-seeded with a
  random sample vector.
  """
  rng = np.random.default_rng(seed)
  if len(vectors) > sample_size:
    vectors = vectors[rng.choice(len(vectors), sample_size, replace=False)]
  centroids = _unit(vectors[rng.choice(len(vectors), num_clusters, replace=False)])
  for _ in range(iterations):
    assignment = top_choices(vectors, centroids, 1)[0][:, 0]
    order = np.argsort(assignment, kind="stable")
    clusters, starts = np.unique(assignment[order], return_index=True)
    sums = np.zeros_like(centroids)
    sums[clusters] = np.add.reduceat(vectors[order], starts, axis=0)
    empty = np.setdiff1d(np.arange(num_clusters), clusters)
    sums[empty] = vectors[rng.choice(len(vectors), len(empty), replace=False)]
    centroids = _unit(sums)
  return centroids


def balanced_assignment(vectors: np.ndarray, centroids: np.ndarray, capacity: int,
                        num_choices: int = 8) -> np.ndarray:
  """Partition of each vector: its best-scoring centroid with room, int64 [N].

  Vectors with the clearest preference (largest score margin between their first and second
  centroid) choose first; each partition takes at most `capacity` vectors (needs
  `capacity * len(centroids) >= N`). Vectors whose `num_choices` best centroids are all full take
  the best centroid that still has room.
  """
  if capacity * len(centroids) < len(vectors):
    raise ValueError(f"{len(centroids)} partitions of {capacity} cannot hold {len(vectors)}")
  choices, scores = top_choices(vectors, centroids, min(num_choices, len(centroids)))
  margin = scores[:, 0] - (scores[:, 1] if scores.shape[1] > 1 else 0)
  priority = np.argsort(-margin, kind="stable")
  assignment = np.full(len(vectors), -1, np.int64)
  room = np.full(len(centroids), capacity, np.int64)
  for choice in range(choices.shape[1]):
    pending = priority[assignment[priority] < 0]
    wanted = choices[pending, choice]
    order = np.argsort(wanted, kind="stable")  # keeps priority order within a centroid
    wanted = wanted[order]
    rank = np.arange(len(wanted)) - np.searchsorted(wanted, wanted, side="left")
    accepted = rank < room[wanted]
    assignment[pending[order[accepted]]] = wanted[accepted]
    room -= np.bincount(wanted[accepted], minlength=len(centroids))
  for vector in np.flatnonzero(assignment < 0):
    scores = np.where(room > 0, centroids @ vectors[vector], -np.inf)
    assignment[vector] = int(np.argmax(scores))
    room[assignment[vector]] -= 1
  return assignment


def _unit(vectors: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
  return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def top_choices(vectors: np.ndarray, centroids: np.ndarray, count: int,
                chunk: int = 16384) -> Tuple[np.ndarray, np.ndarray]:
  """The `count` best rows of `centroids` [C, dim] for each vector [N, dim] by dot product,
  best first: (rows int64 [N, count], scores float32 [N, count]); `chunk` vectors at a time, so
  memory stays at chunk x C."""
  choices = np.empty((len(vectors), count), np.int64)
  scores = np.empty((len(vectors), count), np.float32)
  for start in range(0, len(vectors), chunk):
    block = vectors[start:start + chunk] @ centroids.T
    top = np.argpartition(-block, count - 1, axis=1)[:, :count] if count < block.shape[1] else (
        np.broadcast_to(np.arange(block.shape[1]), block.shape))
    top_scores = np.take_along_axis(block, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    choices[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    scores[start:start + chunk] = np.take_along_axis(top_scores, order, axis=1)
  return choices, scores


def _pad_partitions(vectors: np.ndarray, assignment: np.ndarray,
                    num_partitions: int) -> Tuple[np.ndarray, np.ndarray]:
  """Rows int32 [P, S] (-1 = padding) and vectors float32 [P * S, dim] of the partitions."""
  order = np.argsort(assignment, kind="stable")
  sizes = np.bincount(assignment, minlength=num_partitions)
  size = int(sizes.max())
  slot = np.arange(len(order)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
  rows = np.full((num_partitions, size), -1, np.int32)
  rows[assignment[order], slot] = order
  padded = np.zeros((num_partitions * size, vectors.shape[1]), np.float32)
  padded[assignment[order] * size + slot] = vectors[order]
  return rows, padded


def _pad_to_k(scores: tf.Tensor, rows: tf.Tensor, k) -> Tuple[tf.Tensor, tf.Tensor]:
  """Pads [batch, width <= k] results to [batch, k] with score -inf and row -1."""
  padding = [[0, 0], [0, k - tf.shape(scores)[1]]]
  return (tf.pad(scores, padding, constant_values=-np.inf),
          tf.pad(tf.cast(rows, tf.int32), padding, constant_values=-1))


def _identify(rows: tf.Tensor, identifiers: Optional[tf.Variable]) -> tf.Tensor:
  """Rows -> identifiers (when given); row -1 -> -1, or "" for string identifiers."""
  if identifiers is None:
    return rows
  missing = tf.constant("" if identifiers.dtype == tf.string else -1, identifiers.dtype)
  return tf.where(rows >= 0, tf.gather(identifiers, tf.maximum(rows, 0)), missing)
