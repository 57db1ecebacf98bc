"""trainer.export (and `python -m serving.export`): versioned SavedModels with top-K, loaded in
fresh processes.

`brute_force` and `portable_ann` exports are loaded with plain TensorFlow only (no ScaNN, TFRS or
this project in the process), `scann` after `import scann`. Answers are compared with the trained
model's exact ranking: identical top-20 ids and scores for brute force. The approximate indexes,
with their default options, must return the exact scores of the items they return, best first,
find >= 0.6 of the exact top-20 and (portable_ann, which is deterministic) >= 0.95 of the top-20
of the same index built in this process. 0.6 is only a floor: this 300-item, briefly trained,
32-dim test model has no cluster structure for a partitioned search to exploit (ScaNN's
non-deterministic builds reach 0.79 to 0.96 on it). The recall targets of the defaults, >= 0.99
on a trained Gowalla model, are measured by benchmarks/index_scale.py and recorded in
results/serving_index_recall.md.
"""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_module
from data import popularity
from data import synthetic
from data import warmup
from data.pipeline import InputConfig, make_dataset
from data.prepare import PrepareConfig, prepare
from data.tfrecord import parse_sessions
from data.vocabulary import Vocabulary
from tfrs_attenmixer import ModelConfig, SessionRetrievalModel, topk
from trainer import export
from trainer import versions
from trainer.config import ExperimentConfig, TrainConfig

MAX_LENGTH = 8
UNKNOWN = (5, 10**15, -3)  # never raw ids of the test catalogue


def raw_id(item: int) -> int:
  """The test catalogue's raw ids: large int64, in another order than the item numbers."""
  return 10**10 + (item * 7919) % 100003


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A briefly trained 300-item model on sessions with non-trivial raw ids, and its dataset."""
  data_dir = tmp_path_factory.mktemp("raw")
  sessions = synthetic.generate_sessions(300, 3000, seed=7)
  os.makedirs(data_dir / "gowalla")
  for name, part in (("train_sessions.txt.gz", sessions[:2400]),
                     ("test_sessions.txt.gz", sessions[2400:])):
    with gzip.open(data_dir / "gowalla" / name, "wt") as out:
      out.writelines(" ".join(str(raw_id(item)) for item in s) + "\n" for s in part)
  prepared = prepare(PrepareConfig(dataset="gowalla", num_shards=2),
                     str(tmp_path_factory.mktemp("prepared")), data_dir=str(data_dir),
                     allow_download=False)
  model = SessionRetrievalModel(ModelConfig(embedding_dim=32, num_heads=4), prepared.num_items)
  model.create_weights(MAX_LENGTH)
  optimizer = tf.keras.optimizers.Adam(1e-2)

  @tf.function
  def step(batch):
    with tf.GradientTape() as tape:
      loss = model.compute_loss(batch, training=True)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))

  batches = make_dataset(prepared, "train", InputConfig(batch_size=64, max_length=MAX_LENGTH,
                                                        shuffle_buffer=2000,
                                                        train_order="shuffled"), training=True)
  for batch in batches.take(80):
    step(batch)
  return model, prepared


@pytest.fixture(scope="module")
def exports(trained, tmp_path_factory):
  """One export per index kind: {kind: version folder}."""
  model, prepared = trained
  base = str(tmp_path_factory.mktemp("exports"))
  return {kind: export.export_model(model, prepared, base, model_name=f"m_{kind}", index=kind,
                                    max_length=MAX_LENGTH)
          for kind in topk.INDEX_KINDS}


def _raw_sessions(prepared, split, count):
  batch = next(iter(tf.data.TFRecordDataset(prepared.files(split)).batch(count)))
  return [[int(r) for r in export.raw_id_array(prepared)[s]]
          for s in parse_sessions(batch).to_list()]


def _matrix(rows, left=False):
  width = max(len(r) for r in rows)
  return np.array([[0] * (width - len(r)) + r if left else r + [0] * (width - len(r))
                   for r in rows], np.int64)


@pytest.fixture(scope="module")
def requests(trained):
  """Named int64 session matrices (raw ids) and the exact answers of the in-memory model."""
  model, prepared = trained
  test = _raw_sessions(prepared, "test", 24)
  long_sessions = [test[i] + test[i + 1] + test[i + 2] + test[i + 3] for i in range(0, 16, 4)]
  assert min(map(len, long_sessions)) > MAX_LENGTH
  with_unknown = [s[:1] + [UNKNOWN[i % 3]] + s[1:] + [UNKNOWN[(i + 1) % 3]]
                  for i, s in enumerate(test[:6])]
  inputs = {
      "sessions": _matrix(test),
      "left_padded": _matrix(test, left=True),
      "unknown": _matrix(with_unknown),
      "long": _matrix(long_sessions),
      "empty": np.array([[0, 0, 0], [UNKNOWN[1], 0, UNKNOWN[0]]], np.int64),
  }
  raw_ids = export.raw_id_array(prepared)
  candidates = np.stack([raw_ids[1:25], raw_ids[30:54]])[:, :20].repeat(6, axis=0)
  candidates[:, 3] = 0
  candidates[:, 7] = UNKNOWN[1]
  inputs["candidates"] = candidates

  index_of = {raw: index for index, raw in enumerate(raw_ids) if index}
  table = model.candidate_embeddings().numpy()

  def exact(matrix):
    indices = [[index_of[r] for r in row if r in index_of][-MAX_LENGTH:] for row in matrix]
    padded = np.array([[0] * (MAX_LENGTH - len(r)) + r for r in indices], np.int32)
    queries = model.query_tower(padded).numpy()
    scores = model.config.scale * queries @ table.T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :20]
    return {"item_ids": raw_ids[rows + 1], "scores": np.take_along_axis(scores, rows, 1),
            "embedding": queries, "all_scores": scores}

  expected = {name: exact(inputs[name]) for name in ("sessions", "long")}
  # Candidate scores of the first 12 sessions.
  cand_index = np.vectorize(lambda r: index_of.get(r, 0))(candidates)
  queries = expected["sessions"]["embedding"][:12]
  scores = model.config.scale * np.einsum("bd,bcd->bc", queries, table[cand_index - 1])
  expected["candidate_scores"] = np.where(cand_index > 0, scores, -np.inf)
  inputs["candidate_sessions"] = inputs["sessions"][:12]
  return inputs, expected


_LOADER = r"""
import sys
import numpy as np
requests_file, out_file, with_scann = sys.argv[1:4]
if with_scann == "1":
  import scann  # noqa: F401  (registers the ScaNN ops)
import tensorflow as tf
requests = np.load(requests_file)
out = {}
for position, model_dir in enumerate(sys.argv[4:]):
  signatures = tf.saved_model.load(model_dir).signatures
  def run(key, name, **inputs):
    for output, value in signatures[name](**{k: tf.constant(v) for k, v in inputs.items()}).items():
      out[f"{position}/{key}/{output}"] = value.numpy()
  for key in ("sessions", "left_padded", "unknown", "long", "empty"):
    run(key, "serving_default", sessions=requests[key])
  run("k5", "top_k", sessions=requests["sessions"], k=np.int32(5))
  run("k_all", "top_k", sessions=requests["sessions"][:2], k=np.int32(10**6))
  run("embedding", "session_embedding", sessions=requests["sessions"])
  run("empty_embedding", "session_embedding", sessions=requests["empty"])
  run("score", "score_items", sessions=requests["candidate_sessions"],
      candidates=requests["candidates"])
  run("empty_score", "score_items", sessions=requests["empty"],
      candidates=requests["candidates"][:2])
out["modules"] = np.array([name in sys.modules for name in
                           ("scann", "tensorflow_recommenders", "tfrs_attenmixer")])
np.savez(out_file, **out)
"""


def _load_in_fresh_process(tmp_path, inputs, model_dirs, with_scann):
  requests_file, out_file = tmp_path / "requests.npz", tmp_path / "answers.npz"
  np.savez(requests_file, **inputs)
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")}
  result = subprocess.run(
      [sys.executable, "-c", _LOADER, str(requests_file), str(out_file),
       "1" if with_scann else "0", *model_dirs],
      capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  answers = dict(np.load(out_file))
  return answers, [{key.split("/", 1)[1]: value for key, value in answers.items()
                    if key.startswith(f"{i}/")} for i in range(len(model_dirs))]


def _index_answers(kind, trained, requests, path):
  """Top-20 raw ids of the exported index kind, built in this process with the same options."""
  model, prepared = trained
  with open(os.path.join(path, "assets.extra", export.METADATA_FILE)) as metadata:
    options = json.load(metadata)["index_options"]
  index = topk.build_index(kind, model.candidate_embeddings(), **options)
  raw_ids = export.raw_id_array(prepared)
  return {key: raw_ids[index(requests[1][key]["embedding"], k=20)[1].numpy() + 1]
          for key in ("sessions", "long")}


def _check_answers(answers, trained, requests, exact=True, index_ids=None):
  """Checks one export's answers; `index_ids`: the same index's ids in this process."""
  model, prepared = trained
  inputs, expected = requests
  num_items = prepared.num_items
  counts = popularity.item_counts(prepared)
  raw_ids = export.raw_id_array(prepared)
  for key in ("sessions", "long"):
    ids, scores = answers[f"{key}/item_ids"], answers[f"{key}/scores"]
    assert ids.shape == (len(inputs[key]), 20) and ids.dtype == np.int64
    if exact:
      np.testing.assert_array_equal(ids, expected[key]["item_ids"])
      np.testing.assert_allclose(scores, expected[key]["scores"], rtol=1e-5, atol=1e-5)
    else:
      rows = np.vectorize({raw: index - 1 for index, raw in enumerate(raw_ids)}.get)(ids)
      np.testing.assert_allclose(
          scores, np.take_along_axis(expected[key]["all_scores"], rows, 1), rtol=1e-5, atol=1e-5)
      assert np.all(np.diff(scores, axis=1) <= 1e-6)
      assert topk.retrieval_recall(ids, expected[key]["item_ids"]) >= 0.6
      if index_ids is not None:
        assert topk.retrieval_recall(ids, index_ids[key]) >= 0.95
    assert not answers[f"{key}/unknown_items"].any()
  # Padding side does not matter; unknown ids are dropped and counted. (The approximate
  # indexes are held to the recall floor: the last bits of a session vector depend on the batch
  # it is computed in, which may change which leaves an approximate search visits.)
  for key, rows in (("left_padded", slice(None)), ("unknown", slice(0, 6))):
    if exact:
      np.testing.assert_array_equal(answers[f"{key}/item_ids"], answers["sessions/item_ids"][rows])
    else:
      assert topk.retrieval_recall(answers[f"{key}/item_ids"],
                                   expected["sessions"]["item_ids"][rows]) >= 0.6
  np.testing.assert_array_equal(answers["unknown/unknown_items"], [2] * 6)
  # No known item: the most popular training items, scored by their click share.
  popular = popularity.most_popular(counts)[:20]
  np.testing.assert_array_equal(answers["empty/item_ids"], [raw_ids[popular]] * 2)
  np.testing.assert_allclose(answers["empty/scores"][0], counts[popular] / counts.sum(),
                             rtol=1e-6)
  np.testing.assert_array_equal(answers["empty/unknown_items"], [0, 2])
  # top_k: any k, at most N columns.
  np.testing.assert_array_equal(answers["k5/item_ids"], answers["sessions/item_ids"][:, :5])
  assert answers["k_all/item_ids"].shape == (2, num_items)
  if exact:
    assert sorted(answers["k_all/item_ids"][0]) == sorted(raw_ids[1:])
  # Embeddings and exact candidate scores.
  np.testing.assert_allclose(answers["embedding/embedding"], expected["sessions"]["embedding"],
                             atol=1e-5)
  assert not answers["empty_embedding/embedding"].any()
  np.testing.assert_allclose(answers["score/scores"], expected["candidate_scores"], rtol=1e-5,
                             atol=1e-5)
  share = counts / counts.sum()
  index_of = {raw: index for index, raw in enumerate(raw_ids) if index}
  empty_expected = [[share[index_of[r]] if r in index_of else -np.inf for r in row]
                    for row in inputs["candidates"][:2]]
  np.testing.assert_allclose(answers["empty_score/scores"], empty_expected, rtol=1e-6)


def test_stock_exports_load_with_plain_tensorflow(trained, exports, requests, tmp_path):
  """brute_force and portable_ann: no ScaNN, TFRS or project code in the serving process."""
  answers, per_model = _load_in_fresh_process(
      tmp_path, requests[0], [exports["brute_force"], exports["portable_ann"]], with_scann=False)
  assert not answers["modules"].any(), "the loader imported scann, TFRS or tfrs_attenmixer"
  _check_answers(per_model[0], trained, requests)
  _check_answers(per_model[1], trained, requests, exact=False, index_ids=_index_answers(
      "portable_ann", trained, requests, exports["portable_ann"]))


def test_scann_export_loads_after_importing_scann(trained, exports, requests, tmp_path):
  answers, per_model = _load_in_fresh_process(tmp_path, requests[0], [exports["scann"]],
                                              with_scann=True)
  assert answers["modules"].tolist() == [True, False, False]
  # ScaNN's tree training is not deterministic: no comparison with an index built here.
  _check_answers(per_model[0], trained, requests, exact=False)


def test_export_layout_metadata_and_warmup(trained, exports):
  model, prepared = trained
  path = exports["portable_ann"]
  assert os.path.basename(path) == "1"
  assert sorted(os.listdir(os.path.dirname(path))) == ["1"]
  with open(os.path.join(path, "assets", "vocab.txt")) as vocab:
    assert vocab.read().split("\n")[1] == str(export.raw_id_array(prepared)[1])
  with open(os.path.join(path, "assets.extra", export.METADATA_FILE)) as metadata:
    content = json.load(metadata)
  assert content["index"] == "portable_ann" and content["max_length"] == MAX_LENGTH
  assert content["index_options"] == topk.default_options("portable_ann", prepared.num_items)

  logs = warmup.read_warmup_requests(path)
  assert len(logs) == 2
  known = set(export.raw_id_array(prepared).tolist())
  for log in logs:
    request = log.predict_log.request
    assert request.model_spec.name == "m_portable_ann"
    assert request.model_spec.signature_name == "serving_default"
    sessions = tf.make_ndarray(request.inputs["sessions"])
    assert sessions.dtype == np.int64 and set(sessions.flat) <= known
  assert [len(tf.make_ndarray(log.predict_log.request.inputs["sessions"])) for log in logs] == [1, 8]


def test_versions_are_atomic_and_never_replaced(trained, tmp_path, monkeypatch):
  model, prepared = trained
  base = str(tmp_path)
  model_dir = os.path.join(base, "attenmixer")
  assert export.export_model(model, prepared, base, max_length=MAX_LENGTH).endswith("/1")
  assert export.export_model(model, prepared, base, version=7,
                             max_length=MAX_LENGTH).endswith("/7")
  with pytest.raises(export.ExportError, match="never replaced"):
    export.export_model(model, prepared, base, version=7, max_length=MAX_LENGTH)

  # A crash after the SavedModel is written leaves no version and nothing behind.
  def crash(*args, **kwargs):
    raise RuntimeError("simulated crash")
  with monkeypatch.context() as patch:
    patch.setattr(export, "_write_extras", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
      export.export_model(model, prepared, base, max_length=MAX_LENGTH)
  assert sorted(os.listdir(model_dir)) == ["1", "7"]

  # A killed exporter's temporary folder is not a version and does not disturb numbering.
  os.makedirs(os.path.join(model_dir, ".tmp-export-killed", "variables"))
  assert versions.existing_versions(model_dir) == [1, 7]
  assert export.export_model(model, prepared, base, max_length=MAX_LENGTH).endswith("/8")


def write_run_folder(model, prepared, run_dir):
  """A run folder as the trainer leaves it: config.json and the selected epoch's checkpoint."""
  config = ExperimentConfig(model.config, TrainConfig(max_length=MAX_LENGTH))
  os.makedirs(run_dir / "best")
  with open(run_dir / "config.json", "w") as out:
    json.dump({"experiment": config.to_dict(), "prepared_dir": prepared.directory}, out)
  tf.train.Checkpoint(model=model).save(str(run_dir / "best" / "ckpt"))


def test_cli_exports_a_run_folder(trained, tmp_path):
  model, prepared = trained
  run_dir = tmp_path / "run"
  write_run_folder(model, prepared, run_dir)
  result = run_module("serving.export", f"--checkpoint_dir={run_dir}", "--index=portable_ann",
                      "--index_option=num_partitions_to_search=3", timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  path = result.stdout.strip().splitlines()[-1]
  # The default model folder follows the index, as the trainer's exports.
  assert path == str(run_dir / "export" / "attenmixer_portable_ann" / "1")
  with open(os.path.join(path, "assets.extra", export.METADATA_FILE)) as metadata:
    content = json.load(metadata)
  assert content["max_length"] == MAX_LENGTH
  assert content["index_options"]["num_partitions_to_search"] == 3
  # A version of another index kind is not published into that folder.
  refused = run_module("serving.export", f"--run_dir={run_dir}", "--index=brute_force",
                       "--model_name=attenmixer_portable_ann", timeout=300)
  assert refused.returncode == 1, refused.stderr[-3000:]
  assert "holds portable_ann versions (version 1); a brute_force version" in refused.stderr
  assert os.listdir(run_dir / "export" / "attenmixer_portable_ann") == ["1"]


def test_raw_ids_must_be_int64(tmp_path):
  class Prepared:
    directory = str(tmp_path)

    @staticmethod
    def vocabulary():
      return Vocabulary(("12", "item-7"))
  with pytest.raises(export.ExportError, match=r"vocab.txt, line 3: raw id 'item-7'"):
    export.raw_id_array(Prepared())


def test_item_counts_and_most_popular(trained):
  _, prepared = trained
  counts = popularity.item_counts(prepared)
  sessions = [s for batch in tf.data.TFRecordDataset(prepared.files("train")).batch(1000)
              for s in parse_sessions(batch).to_list()]
  assert counts.sum() == sum(map(len, sessions)) and counts[0] == 0
  np.testing.assert_array_equal(popularity.most_popular(np.array([0, 2, 5, 2, 0])), [2, 1, 3, 4])
