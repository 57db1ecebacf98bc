"""tfrs_attenmixer.index_tuning: an approximate index's search breadth tuned to a recall target,
on small clustered data (the exporter's use on a trained model: tests/test_export.py)."""

import numpy as np
import pytest

from tfrs_attenmixer import index_tuning
from tfrs_attenmixer import topk

from test_topk import NUM_ITEMS, data  # noqa: F401  (the fixture: clustered candidates, queries)


def test_exact_top_k_is_numpy_argsort_in_blocks(data):
  candidates, queries, _ = data
  expected = np.argsort(-(queries @ candidates.T), axis=1, kind="stable")[:, :20]
  np.testing.assert_array_equal(index_tuning.exact_top_k(queries, candidates, 20, block=64),
                                expected)
  assert index_tuning.exact_top_k(queries[:3], candidates[:5], 20).shape == (3, 5)


def _recall(layer, queries, candidates, k=20):
  rows = layer(queries, k=k)[1].numpy()
  return topk.retrieval_recall(rows, index_tuning.exact_top_k(queries, candidates, k))


@pytest.mark.parametrize("kind,narrow", [
    ("portable_ann", dict(num_partitions=60, num_partitions_to_search=2)),
    ("scann", dict(num_leaves=60, num_leaves_to_search=2, num_reordering_candidates=40)),
])
def test_a_narrow_search_is_widened_to_the_cheapest_setting_reaching_the_target(data, kind,
                                                                               narrow):
  candidates, queries, _ = data
  options = {**topk.default_options(kind, NUM_ITEMS), **narrow}
  layer = topk.build_index(kind, candidates, **options)
  before = _recall(layer, queries, candidates)
  assert before < 0.9
  tuning = index_tuning.tune_search(layer, kind, options, queries, candidates, min_recall=0.98)
  assert tuning.reached and tuning.num_queries == len(queries)
  assert tuning.default.recall[20] == pytest.approx(before)
  assert tuning.recall[20] >= 0.98 and tuning.chosen.latency_ms > 0
  # The layer is left at the chosen setting, and searches as measured.
  for name, value in tuning.settings.items():
    assert getattr(layer, name) == value
  assert _recall(layer, queries, candidates) == pytest.approx(tuning.recall[20])
  # Nothing that reaches the target searches less on every parameter.
  for trial in tuning.trials:
    if trial.recall[20] >= 0.98 and trial is not tuning.chosen:
      assert any(trial.settings[name] > tuning.settings[name] for name in trial.settings) or \
          trial.latency_ms >= tuning.chosen.latency_ms
  record = tuning.to_dict()
  assert record["reached"] and record["recall"]["at_20"] >= 0.98
  assert record["default"]["settings"] == tuning.default.settings


def test_parameters_given_explicitly_are_kept(data):
  candidates, queries, _ = data
  options = {**topk.default_options("scann", NUM_ITEMS), "num_leaves": 60,
             "num_leaves_to_search": 2, "num_reordering_candidates": 40}
  layer = topk.build_index("scann", candidates, **options)
  tuning = index_tuning.tune_search(layer, "scann", options, queries, candidates,
                                    min_recall=0.8, fixed=("num_reordering_candidates",))
  assert tuning.reached and tuning.settings["num_reordering_candidates"] == 40
  assert {trial.settings["num_reordering_candidates"] for trial in tuning.trials} == {40}


def test_an_unreachable_target_raises_with_the_best_recall_and_restores_the_layer(data):
  candidates, queries, _ = data
  options = {**topk.default_options("portable_ann", NUM_ITEMS), "num_partitions": 60,
             "num_partitions_to_search": 2}
  layer = topk.build_index("portable_ann", candidates, **options)
  with pytest.raises(index_tuning.RecallNotReached, match=r"the best reached 0\.\d+ with") as error:
    # Only searches scoring fewer than N candidates are tried; given at 2, never more.
    index_tuning.tune_search(layer, "portable_ann", options, queries, candidates,
                             min_recall=0.99, fixed=("num_partitions_to_search",))
  tuning = error.value.tuning
  assert not tuning.reached and [trial.settings for trial in tuning.trials] == [
      {"num_partitions_to_search": 2}]
  assert layer.num_partitions_to_search == 2
  assert tuning.to_dict()["reached"] is False and tuning.to_dict()["batch1_latency_ms"] is None


def test_portable_ann_never_tries_a_search_as_wide_as_brute_force():
  options = {"num_partitions": 40, "num_partitions_to_search": 20}
  ladder = index_tuning.search_ladder("portable_ann", options, 1000, 20, partition_size=38)
  assert ladder and all(s["num_partitions_to_search"] * 38 < 1000 for s in ladder)
  assert {"num_partitions_to_search": 20} in ladder
  scann = index_tuning.search_ladder("scann", {"num_leaves": 30, "num_leaves_to_search": 20,
                                               "num_reordering_candidates": 500}, 1000, 20)
  assert {s["num_reordering_candidates"] for s in scann} == {500, 1000}
  assert max(s["num_leaves_to_search"] for s in scann) == 30


def test_min_recall_zero_only_measures(data):
  candidates, queries, _ = data
  options = topk.default_options("portable_ann", NUM_ITEMS)
  layer = topk.build_index("portable_ann", candidates, **options)
  tuning = index_tuning.tune_search(layer, "portable_ann", options, queries, candidates,
                                    min_recall=0.0)
  assert tuning.chosen is tuning.default and len(tuning.trials) == 1
  assert tuning.settings == {"num_partitions_to_search": options["num_partitions_to_search"]}


def test_bad_arguments(data):
  candidates, queries, _ = data
  layer = topk.build_index("brute_force", candidates)
  with pytest.raises(ValueError, match="no search breadth"):
    index_tuning.tune_search(layer, "brute_force", {}, queries, candidates)
  options = topk.default_options("portable_ann", NUM_ITEMS)
  layer = topk.build_index("portable_ann", candidates, **options)
  with pytest.raises(ValueError, match=r"min_recall must be in \[0, 1\]"):
    index_tuning.tune_search(layer, "portable_ann", options, queries, candidates, min_recall=2)
  with pytest.raises(ValueError, match="of one dim"):
    index_tuning.tune_search(layer, "portable_ann", options, queries[:, :8], candidates)
