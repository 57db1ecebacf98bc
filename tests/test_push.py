"""trainer.push: exports are validated in a fresh process, and pushed only if not worse."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_module
from serving import testing
from trainer import export
from trainer import push
from test_export import MAX_LENGTH, trained, write_run_folder  # noqa: F401  (fixture reused)


def _leftovers(model_dir):
  return sorted(name for name in os.listdir(model_dir) if not name.isdigit())


@pytest.fixture
def spy(monkeypatch):
  """Records the reports of `validate_in_fresh_process`."""
  reports = []
  original = push.validate_in_fresh_process

  def recording(*args, **kwargs):
    reports.append(original(*args, **kwargs))
    return reports[-1]
  monkeypatch.setattr(push, "validate_in_fresh_process", recording)
  return reports


def test_good_export_is_validated_in_a_fresh_process_and_published(trained, tmp_path, spy):
  model, prepared = trained
  path = export.export_model(model, prepared, str(tmp_path), max_length=MAX_LENGTH,
                             metrics={"mrr_at_20": 12.5, "hr_at_20": 40.0, "note": "x"})
  assert path == str(tmp_path / "attenmixer" / "1")
  [report] = spy
  assert report.ok, report.reason
  assert report.requests == 2
  assert ".tmp-export-" in report.saved_model_dir  # validated before the rename
  assert _leftovers(tmp_path / "attenmixer") == []
  assert push.read_metadata(path)[push.METRICS_KEY] == {"mrr_at_20": 12.5, "hr_at_20": 40.0}


def test_nan_candidate_is_refused_and_leaves_nothing(trained, tmp_path, spy, monkeypatch):
  model, prepared = trained
  base = str(tmp_path)
  nan_table = tf.fill(tf.shape(model.candidate_embeddings()), np.nan)
  with monkeypatch.context() as patch:
    patch.setattr(model, "candidate_embeddings", lambda: nan_table)
    with pytest.raises(push.PushRefused, match="non-finite scores") as refusal:
      export.export_model(model, prepared, base, max_length=MAX_LENGTH)
  assert not refusal.value.report.ok
  assert os.listdir(tmp_path / "attenmixer") == []  # no version, no temporary folder


def test_unknown_ids_and_hangs_fail_validation(tmp_path):
  # The toy SavedModel returns ids 1..40; its vocabulary says the catalogue is 100..139.
  version = testing.write_toy_version(str(tmp_path / "toy"), 1)
  os.makedirs(os.path.join(version, "assets"), exist_ok=True)
  with open(os.path.join(version, "assets", "vocab.txt"), "w") as out:
    out.writelines(f"{100 + i}\n" for i in range(testing.NUM_ITEMS))
  report = push.validate_in_fresh_process(version)
  assert not report.ok
  assert "not in the vocabulary" in report.reason

  # A hung validation process is killed: a failure.
  report = push.validate_in_fresh_process(str(tmp_path / "missing"), timeout_seconds=0.01)
  assert not report.ok and "timed out" in report.reason


@pytest.mark.parametrize("string_ids", [False, True])
def test_validation_allows_only_the_padding_pattern(string_ids):
  """Padding (0, or "" for string ids) only with score -inf; every other id in the vocabulary."""
  check = push._check_outputs  # pylint: disable=protected-access
  dtype = tf.string if string_ids else tf.int64
  specs = {"item_ids": tf.TensorSpec([None, 3], dtype),
           "scores": tf.TensorSpec([None, 3], tf.float32)}
  vocabulary = {"sku-7", "sku-8", "sku-9"} if string_ids else {"7", "8", "9"}

  def outputs(ids, scores):
    if string_ids:
      ids = np.array([[f"sku-{i}".encode() if i else b"" for i in ids]], object)
    else:
      ids = np.array([ids], np.int64)
    return {"item_ids": ids, "scores": np.array([scores], np.float32)}

  check("r", outputs([7, 8, 0], [2.0, 1.0, -np.inf]), specs, 1, vocabulary, np)
  for ids, scores, reason in (([7, 8, 0], [2.0, 1.0, 0.5], "padding item id with a finite score"),
                              ([7, 8, 9], [2.0, 1.0, -np.inf], "non-finite"),
                              ([7, 8, 9], [2.0, np.nan, 1.0], "non-finite"),
                              ([7, 8, 10], [2.0, 1.0, 0.5], "not in the vocabulary")):
    with pytest.raises(push._Invalid, match=reason):  # pylint: disable=protected-access
      check("r", outputs(ids, scores), specs, 1, vocabulary, np)
  with pytest.raises(push._Invalid, match="shape"):  # pylint: disable=protected-access
    check("r", outputs([7, 8], [2.0, 1.0]), specs, 1, vocabulary, np)


class _Log:
  """Stands for absl.logging in trainer.push: keeps the formatted messages."""

  def __init__(self):
    self.messages = []

  def _keep(self, message, *args):
    self.messages.append(message % args)

  info = warning = error = _keep


def test_push_if_better_compares_with_the_newest_version(trained, tmp_path, monkeypatch):
  model, prepared = trained
  base = str(tmp_path)
  model_dir = tmp_path / "attenmixer"

  def attempt(mrr, **kwargs):
    return export.export_model(model, prepared, base, max_length=MAX_LENGTH, validate=False,
                               push_if_better=True, metrics={"mrr_at_20": mrr, "hr_at_20": 50.0},
                               **kwargs)

  assert attempt(10.25).endswith("/1")  # no existing version: published
  log = _Log()
  monkeypatch.setattr(push, "logging", log)
  with pytest.raises(push.PushRefused, match="worse") as refusal:
    attempt(9.75)
  assert (refusal.value.candidate, refusal.value.baseline) == (9.75, 10.25)
  assert "9.75" in log.messages[-1] and "10.25" in log.messages[-1], log.messages
  assert "refused" in log.messages[-1]
  assert sorted(os.listdir(model_dir)) == ["1"]

  assert attempt(10.25).endswith("/2")  # equal: published
  assert "10.25 >= 10.25" in log.messages[-1] and "publishing" in log.messages[-1]
  assert export.export_model(model, prepared, base, max_length=MAX_LENGTH, validate=False,
                             push_if_better=True,
                             metrics={"mrr_at_20": 11.0, "hr_at_20": 60.0}).endswith("/3")
  assert "11 >= 10.25" in log.messages[-1]
  # Another metric is chosen with push_metric.
  with pytest.raises(push.PushRefused, match="hr_at_20"):
    attempt(20.0, push_metric="hr_at_20")  # better MRR@20, but HR@20 50 < 60
  assert sorted(os.listdir(model_dir)) == ["1", "2", "3"]


def test_cli_push_if_better_reads_the_run_metrics(trained, tmp_path):
  model, prepared = trained
  run_dir = tmp_path / "run"
  write_run_folder(model, prepared, run_dir)
  with open(run_dir / "metrics.json", "w") as out:
    json.dump({"valid": {"mrr_at_20": 5.5, "hr_at_20": 30.0}, "test": None}, out)
  base = tmp_path / "exports"
  export.export_model(model, prepared, str(base), max_length=MAX_LENGTH, validate=False,
                      metrics={"mrr_at_20": 6.0})
  result = run_module("serving.export", f"--run_dir={run_dir}", f"--export_dir={base}",
                      "--novalidate", "--push_if_better", timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "5.5" in result.stderr and "6" in result.stderr and "worse" in result.stderr
  assert sorted(os.listdir(base / "attenmixer")) == ["1"]


def test_push_if_better_refuses_an_approximate_index_below_its_recall_target(trained, tmp_path):
  """A portable_ann version measured (min_recall=0) at 3 of its partitions has recall@20 far
  below 0.99: published without push_if_better, refused with it, naming the recall."""
  model, prepared = trained

  def attempt(**kwargs):
    return export.export_model(model, prepared, str(tmp_path), index="portable_ann",
                               max_length=MAX_LENGTH, validate=False, min_recall=0.0,
                               num_partitions_to_search=3, metrics={"mrr_at_20": 10.0},
                               **kwargs)

  recall = push.recorded_recall(attempt())["recall"]["at_20"]
  assert recall < 0.9
  model_dir = tmp_path / "attenmixer_portable_ann"
  with pytest.raises(push.PushRefused, match=f"recall@20 = {recall:g} below the target 0.99"):
    push.publish(_copy_version(model_dir / "1", model_dir), str(model_dir), validate=False,
                 push_if_better=True, min_recall=0.99)
  # The target recorded with the version (here 0: measure only) is the default threshold.
  assert attempt(push_if_better=True).endswith("/2")
  assert sorted(os.listdir(model_dir)) == ["1", "2"]


def _copy_version(version_dir, model_dir):
  """A temporary copy of a version folder, as the exporter publishes from."""
  import shutil  # pylint: disable=g-import-not-at-top
  temporary = os.path.join(model_dir, ".tmp-export-copy")
  shutil.copytree(version_dir, temporary)
  return temporary
