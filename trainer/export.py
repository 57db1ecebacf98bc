"""Servable SavedModels: query tower + top-K index + vocabulary, in versioned folders.

`export_model` exports a trained model: the trainer (`trainer.main`) calls it at the end of
training, and `python -m serving.export --run_dir=RUN` on a finished run folder.

Layout: `<export_base>/<model_name>/<version>/` is a SavedModel (integer versions, as TF Serving
expects; by default 1 + the largest existing one) with `assets/vocab.txt` (the vocabulary),
`assets.extra/tf_serving_warmup_requests` (see `data.warmup`) and
`assets.extra/export.json` (index kind and parameters, max_length, catalogue size, and for an
approximate index its measured recall, `index_recall`). A version is
written into a hidden temporary folder beside it and renamed into place once complete
(`trainer.versions`), after `trainer.push` has validated it in a fresh process (and, with
`push_if_better`, found its validation metric not worse than the newest version's). A temporary
folder left by a killed exporter is removed by the next export.

Signatures. Item ids are RAW ids (those of the dataset files): int64 with 0 as padding when
every raw id of the catalogue is a positive integer (the paper datasets), otherwise strings with
"" as padding (`raw_id_array`; `export.json`'s `item_id_dtype` says which). "id" below is that
dtype.

| signature | inputs | outputs |
|---|---|---|
| `serving_default` | `sessions` id [batch, length] | `item_ids` id [batch, 20], `scores` float32 [batch, 20], `unknown_items` int32 [batch] |
| `top_k` | `sessions`, `k` int32 scalar | as `serving_default`, with min(k, N) columns |
| `session_embedding` | `sessions` | `embedding` float32 [batch, dim] |
| `score_items` | `sessions`, `candidates` id [batch, num_candidates] | `scores` float32 [batch, num_candidates] |

The default k: TF Serving needs every input of a signature in each request, so an optional `k`
is two signatures: `serving_default` takes only `sessions` and returns the top `DEFAULT_K` = 20;
`top_k` takes `sessions` and `k` (k >= 1; k > N returns all N items).

Sessions: each row is a session in click order, of any length, padded (0 or "") on either side. Ids not
in the vocabulary are treated as padding and counted in `unknown_items` (never an error). The
most recent `max_length` known items are fed to the model (as in training). A session with no
known item (empty, all padding or all unknown) gets the most popular training items, with their
share of the training clicks as `scores`; its `embedding` is zeros. Scores are the model's
`scale * <session, item>` (the logits of training).

`score_items` scores the given candidates exactly (no index); unknown candidates and padding
get -inf. For a session with no known item it returns the candidates' click shares, so its
order agrees with `serving_default`.

The approximate indexes may return fewer than k real items; the missing entries are the padding
id with score -inf (see `tfrs_attenmixer.topk`).

Recall. An approximate index (`scann`, `portable_ann`) is checked before it is published: the
session vectors of up to `RECALL_QUERIES` held-out examples (spread evenly over the `recall_split`:
the validation split, or the test split for a model refit on it) are searched with the index
and exactly, and recall@20 is measured. The index's search breadth is then tuned to the cheapest
setting whose recall reaches `min_recall` (`tfrs_attenmixer.index_tuning`; search options given
explicitly are kept as given). `export.json`'s `index_recall` records the recall, the chosen
setting, its batch-1 search latency, the split and query count, and every setting tried. When no
setting reaches `min_recall`, `RecallTargetMissed` names the best recall reached and no version
is published.

Loading: `brute_force` and `portable_ann` exports hold only stock TensorFlow ops (stock TF
Serving, or `tf.saved_model.load` without this project); a `scann` export needs the ScaNN ops
(`import scann` before `tf.saved_model.load`, or TF Serving built with ScaNN).
"""

import json
import os
import shutil
from typing import Any, Dict, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from data import popularity
from data import warmup
from data.input_config import InputConfig
from data.pipeline import make_dataset
from data.prepared import PreparedDataset
from data.vocabulary import VOCABULARY_FILE
from tfrs_attenmixer import index_tuning
from tfrs_attenmixer import topk
from tfrs_attenmixer.model import SessionRetrievalModel
from trainer import export_options
from trainer import push
from trainer import versions
from trainer.export_errors import ExportError
from trainer.export_errors import RecallTargetMissed

DEFAULT_K = 20
RECALL_QUERIES = 2000
METADATA_FILE = "export.json"

_K = tf.TensorSpec([], tf.int32, name="k")


class ServingModule(tf.Module):
  """The servable: raw-id sessions -> top-K raw ids, via the query tower and an index.

  Holds the query tower, the index over the candidate vectors, the exact candidate vectors
  float32 [N, dim] (row r = item index r + 1, for `score_items`), the vocabulary lookup table
  (raw id -> index, from the `vocab.txt` asset), `raw_ids` [N + 1] (index -> raw id; entry 0 is
  the padding id: 0, or "" for string ids) and the popularity (`click_share` float32 [N + 1],
  `popular_indices` int64 [N]). The ids' dtype (int64 or string) is that of `raw_ids`.
  """

  def __init__(self, model: SessionRetrievalModel, index: tf.keras.layers.Layer,
               vocabulary_file: str, raw_ids: np.ndarray, counts: np.ndarray, max_length: int):
    super().__init__(name="attenmixer_serving")
    self.query_tower = model.query_tower
    self.index = index
    self.num_items = model.num_items
    self.max_length = max_length
    self.scale = float(model.config.scale)
    self.candidates = tf.Variable(model.candidate_embeddings(), trainable=False,
                                  name="candidates")
    self.vocabulary = tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            vocabulary_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER),
        default_value=0)
    string_ids = raw_ids.dtype == object
    id_dtype = tf.string if string_ids else tf.int64
    self.padding_id = tf.constant("" if string_ids else 0, id_dtype)
    self.raw_ids = tf.Variable(tf.constant(raw_ids.tolist(), id_dtype), trainable=False,
                               name="raw_ids")
    total = max(int(counts.sum()), 1)
    self.click_share = tf.Variable((counts / total).astype(np.float32), trainable=False,
                                   name="click_share")
    self.popular_indices = tf.Variable(popularity.most_popular(counts), trainable=False,
                                       name="popular_indices")
    sessions = tf.TensorSpec([None, None], id_dtype, name="sessions")
    candidates = tf.TensorSpec([None, None], id_dtype, name="candidates")
    self.recommend = tf.function(self._recommend, input_signature=[sessions])
    self.top_k = tf.function(self._top_k, input_signature=[sessions, _K])
    self.session_embedding = tf.function(self._session_embedding, input_signature=[sessions])
    self.score_items = tf.function(self._score_items, input_signature=[sessions, candidates])

  def signatures(self) -> Dict[str, Any]:
    return {
        "serving_default": self.recommend,
        "top_k": self.top_k,
        "session_embedding": self.session_embedding,
        "score_items": self.score_items,
    }

  def _recommend(self, sessions: tf.Tensor) -> Dict[str, tf.Tensor]:
    """`serving_default`: the top `DEFAULT_K` items of each session."""
    return self._top_k(sessions, tf.constant(DEFAULT_K))

  def _session_embedding(self, sessions: tf.Tensor) -> Dict[str, tf.Tensor]:
    """`session_embedding`: the session vectors [batch, dim] (zeros when no item is known)."""
    items, _, empty = self._encode(sessions)
    return {"embedding": self._embed(items, empty)}

  def _score_items(self, sessions: tf.Tensor, candidates: tf.Tensor) -> Dict[str, tf.Tensor]:
    """`score_items`: exact scores [batch, num_candidates] of the candidates (raw ids)."""
    items, _, empty = self._encode(sessions)
    queries = self._embed(items, empty)
    indices = self._lookup(candidates)
    vectors = tf.gather(self.candidates, tf.maximum(indices - 1, 0))
    scores = self.scale * tf.linalg.matvec(vectors, queries)
    scores = tf.where(empty[:, None], tf.gather(self.click_share, indices), scores)
    return {"scores": tf.where(indices > 0, scores, -np.inf)}

  def _lookup(self, ids: tf.Tensor) -> tf.Tensor:
    """Item indices int64 of raw ids (0 for padding and unknown ids)."""
    keys = ids if ids.dtype == tf.string else tf.strings.as_string(ids)
    return tf.where(tf.equal(ids, self.padding_id), tf.zeros_like(ids, tf.int64),
                    self.vocabulary.lookup(keys))

  def _encode(self, sessions: tf.Tensor):
    """Raw-id sessions [batch, length] -> (indices int32 [batch, max_length] left-padded with
    the most recent known items, unknown counts int32 [batch], no-known-item flags [batch])."""
    indices = self._lookup(sessions)
    known = indices > 0
    unknown = tf.reduce_sum(
        tf.cast(tf.not_equal(sessions, self.padding_id) & ~known, tf.int32), axis=1)
    latest_first = tf.reverse(tf.ragged.boolean_mask(indices, known), axis=[1])
    items = tf.reverse(latest_first.to_tensor(0, shape=[None, self.max_length]), axis=[1])
    return tf.cast(items, tf.int32), unknown, ~tf.reduce_any(known, axis=1)

  def _embed(self, items: tf.Tensor, empty: tf.Tensor) -> tf.Tensor:
    queries = self.query_tower(items, training=False)
    return tf.where(empty[:, None], tf.zeros_like(queries), queries)

  def _top_k(self, sessions: tf.Tensor, k: tf.Tensor) -> Dict[str, tf.Tensor]:
    with tf.control_dependencies([tf.debugging.assert_positive(k, message="k must be >= 1")]):
      k = tf.minimum(k, self.num_items)  # the check runs before any op that takes k
    items, unknown, empty = self._encode(sessions)
    scores, rows = self.index(self._embed(items, empty), k=k)
    popular = self.popular_indices[:k]
    item_ids = tf.where(empty[:, None], tf.gather(self.raw_ids, popular)[None, :],
                        tf.gather(self.raw_ids, rows + 1))
    scores = tf.where(empty[:, None], tf.gather(self.click_share, popular)[None, :],
                      self.scale * scores)
    return {"item_ids": item_ids, "scores": scores, "unknown_items": unknown}


def raw_id_array(prepared: PreparedDataset) -> np.ndarray:
  """[N + 1]: the raw id of each item index, entry 0 the padding id.

  int64 (padding 0) when every raw id is a canonical positive int64 (`is_int64_id`), as in the
  paper datasets; otherwise the catalogue's ids are strings (SKUs, URLs, UUIDs, or numbers mixed
  with them): an object array of `str`, padding "". The export's signatures take and return ids
  of that dtype.
  """
  raw_ids = prepared.vocabulary().raw_ids
  if all(is_int64_id(raw) for raw in raw_ids):
    return np.array([0, *map(int, raw_ids)], np.int64)
  return np.array(["", *raw_ids], object)


def is_int64_id(raw: str) -> bool:
  """Whether `raw` is a canonical positive int64 ("12", not "012", "+12", "0" or 2**63)."""
  return raw.isascii() and raw.isdigit() and str(int(raw)) == raw and 0 < int(raw) < 2**63


def export_model(model: SessionRetrievalModel,
                 prepared: PreparedDataset,
                 export_base: str,
                 model_name: Optional[str] = None,
                 index: str = "brute_force",
                 version: Optional[int] = None,
                 max_length: int = 20,
                 validate: bool = True,
                 push_if_better: bool = False,
                 metrics: Optional[Dict[str, Any]] = None,
                 push_metric: str = "mrr_at_20",
                 min_recall: float = export_options.DEFAULT_MIN_RECALL,
                 recall_split: str = "valid",
                 **index_options: Any) -> str:
  """Exports `model` as `<export_base>/<model_name>/<version>/` and returns that path.

  Args:
    model: the trained model (built, weights loaded).
    prepared: its prepared dataset (vocabulary, and the training split for popularity and the
      warm-up requests).
    export_base: the folder TF Serving's `base_path`s live in.
    model_name: the model's folder (and TF Serving model name); default `model_name_for(index)`.
      A folder holding versions of another index kind is refused (`ExportError`).
    index: "brute_force", "scann" or "portable_ann" (see `tfrs_attenmixer.topk`).
    version: integer version >= 1; default 1 + the largest existing one. An existing version is
      never replaced (`ExportError`).
    max_length: most recent items fed to the query tower (the training `max_length`).
    validate: validate the version in a fresh process before publishing it (`trainer.push`).
    push_if_better: publish only if the version's `metrics[push_metric]` is not below the
      newest existing version's (`trainer.push`); otherwise `push.PushRefused`.
    metrics: the run's validation metrics (percent), recorded in `export.json`.
    push_metric: the metric `push_if_better` compares.
    min_recall: recall@20 target of an approximate index, in [0, 1] (see the module doc); the
      search breadth is tuned to reach it, else `RecallTargetMissed`. 0: measure only.
    recall_split: the held-out split recall is measured on ("valid", or "test" for a model
      trained on the validation split).
    **index_options: index parameters overriding `topk.default_options`; search parameters
      given here are kept, not tuned.

  Raises:
    ExportError: a bad argument, a model folder of another index kind, an existing version.
    RecallTargetMissed: (an `ExportError`) no search setting reaches `min_recall`.
    push.PushRefused: validation failed, or `push_if_better` found the version worse.
  """
  if index not in topk.INDEX_KINDS:
    raise ExportError(f"index must be one of {', '.join(topk.INDEX_KINDS)}; got {index!r}")
  if version is not None and (isinstance(version, bool) or not isinstance(version, int) or
                              version < 1):
    raise ExportError(f"version must be an integer >= 1; got {version!r}")
  if max_length < 1:
    raise ExportError(f"max_length must be >= 1; got {max_length}")
  if not 0.0 <= min_recall <= 1.0:
    raise ExportError(f"min_recall must be in [0, 1]; got {min_recall}")
  model_name = model_name or model_name_for(index)
  model_dir = os.path.join(export_base, model_name)
  _check_same_index(model_dir, index)
  if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
    raise ExportError(f"{os.path.join(model_dir, str(version))} exists; versions are never "
                      "replaced (omit the version to take the next one)")

  raw_ids = raw_id_array(prepared)
  counts = popularity.item_counts(prepared, "train")
  options = {**topk.default_options(index, model.num_items), **index_options}
  logging.info("Building the %s index over %d items: %s", index, model.num_items, options)
  layer = topk.build_index(index, model.candidate_embeddings(), k=DEFAULT_K, **options)
  recall = None
  if index in index_tuning.SEARCH_PARAMETERS:
    recall = _tune_recall(model, prepared, layer, index, options, sorted(index_options),
                          min_recall, recall_split, max_length)
    options = {**options, **recall["settings"]}
  module = ServingModule(model, layer, os.path.join(prepared.directory, VOCABULARY_FILE),
                         raw_ids, counts, max_length)
  metadata = {"index": index, "index_options": options, "max_length": max_length,
              "num_items": model.num_items, "embedding_dim": model.config.embedding_dim,
              "item_id_dtype": "string" if raw_ids.dtype == object else "int64",
              "default_k": DEFAULT_K, "dataset": prepared.name,
              "signatures": sorted(module.signatures())}
  if metrics:
    metadata[push.METRICS_KEY] = push.numeric_metrics(metrics)
  if recall:
    metadata[push.RECALL_KEY] = recall

  os.makedirs(model_dir, exist_ok=True)
  versions.remove_abandoned_temporaries(model_dir)
  temporary = versions.make_temporary(model_dir)
  try:
    save_options = tf.saved_model.SaveOptions(
        namespace_whitelist=["Scann"] if index == "scann" else None)
    tf.saved_model.save(module, temporary, signatures=module.signatures(), options=save_options)
    _write_extras(temporary, model_name, metadata,
                  warmup.sample_sessions(prepared, raw_ids))
    path = push.publish(temporary, model_dir, version, validate=validate,
                        push_if_better=push_if_better, push_metric=push_metric,
                        min_recall=min_recall)
  finally:
    if os.path.exists(temporary):
      shutil.rmtree(temporary, ignore_errors=True)
  logging.info("Exported %s (%s index)", path, index)
  return path


def held_out_queries(model: SessionRetrievalModel, prepared: PreparedDataset, split: str,
                     max_length: int, count: int = RECALL_QUERIES) -> np.ndarray:
  """float32 [M, dim]: the session vectors of M = min(count, examples) examples of `split`,
  every ceil(examples / count)-th one, so they span the split's time range."""
  total = prepared.num_examples(split)
  stride = max(1, -(-total // count))
  examples = make_dataset(prepared, split, InputConfig(batch_size=500, max_length=max_length),
                          training=False).unbatch()
  items = (examples.enumerate().filter(lambda position, _: position % stride == 0)
           .map(lambda _, example: example["items"]).take(count).batch(500))
  vectors = [model.query_tower(batch, training=False).numpy() for batch in items]
  return np.concatenate(vectors) if vectors else np.zeros([0, model.config.embedding_dim],
                                                          np.float32)


def _tune_recall(model: SessionRetrievalModel, prepared: PreparedDataset, layer, index: str,
                 options: Dict[str, Any], explicit, min_recall: float, split: str,
                 max_length: int) -> Dict[str, Any]:
  """Measures the index's recall on held-out sessions and tunes its search breadth (the layer
  is left at the chosen setting); returns export.json's `index_recall` record."""
  queries = held_out_queries(model, prepared, split, max_length)
  if not len(queries):
    raise ExportError(f"{prepared.directory}: the {split} split has no examples to measure the "
                      f"{index} index's recall on")
  if len(queries) < 1000:
    logging.warning("The %s split has only %d examples: the recall of the %s index is measured "
                    "on them", split, len(queries), index)
  fixed = [name for name in explicit if name in index_tuning.SEARCH_PARAMETERS[index]]
  try:
    tuning = index_tuning.tune_search(layer, index, options, queries,
                                      model.candidate_embeddings().numpy(), ks=(20, DEFAULT_K),
                                      min_recall=min_recall, fixed=fixed)
  except index_tuning.RecallNotReached as error:
    logging.error("Export refused, nothing published: %s", error)
    raise RecallTargetMissed(
        f"{error}; nothing was published (lower --min_recall, search more with "
        f"--index_option, or export brute_force)", error.tuning) from error
  record = {**tuning.to_dict(), "split": split}
  default_recall = min(tuning.default.recall.values())
  logging.info("%s index: recall@20 %.4f on %d %s examples with %s (batch-1 search %.3f ms); its "
               "default setting %s gave %.4f (target %.2f)", index, tuning.recall[20],
               tuning.num_queries, split, tuning.settings, tuning.chosen.latency_ms,
               tuning.default.settings, default_recall, min_recall)
  return record


def model_name_for(index: str) -> str:
  """The default model folder of an index kind: `attenmixer` for the exact index, else
  `attenmixer_<index>` (one folder per kind: a server loads one kind's ops per model)."""
  return "attenmixer" if index == "brute_force" else f"attenmixer_{index}"


def _check_same_index(model_dir: str, index: str) -> None:
  """Raises ExportError when `model_dir` holds versions of another index kind (a ScaNN version
  among exact ones would be served by a model server that cannot load its ops)."""
  for version in versions.existing_versions(model_dir):
    kind = push.read_metadata(os.path.join(model_dir, str(version))).get("index")
    if kind is not None and kind != index:
      raise ExportError(
          f"{model_dir} holds {kind} versions (version {version}); a {index} version does not "
          f"belong there: export it to its own model folder (default --model_name="
          f"{model_name_for(index)})")


def _write_extras(saved_model_dir: str, model_name: str, metadata: Dict[str, Any],
                  sessions: np.ndarray) -> None:
  """`assets.extra/`: the warm-up requests and `export.json`."""
  warmup.write_warmup_requests(saved_model_dir, model_name, sessions)
  with open(os.path.join(saved_model_dir, warmup.EXTRA_ASSETS_DIR, METADATA_FILE), "w") as out:
    json.dump(metadata, out, indent=1, sort_keys=True)
