"""benchmarks.index_scale, short (issue 6, point 8): the real command on tiny catalogues.

`python -m benchmarks.index_scale` runs in a fresh process (its peak memory is its own) on
catalogues of 3,000 and 1,000,000 items with a memory budget of 0.5 GiB: the 3,000 items fit the
prior estimate and run; their measured growth per item (about 35 KB here, mostly fixed costs
spread over few items) puts 1,000,000 items far above the budget, so that size is skipped with
its reason and replaced by the largest size that fits (about 12,000 items). No Gowalla run
folder is needed (`--nogowalla`), and the sweeps are off; about 30 s on 2 busy cores.
"""

import json

import pytest

from conftest import run_module
from benchmarks import index_scale

SMALL, LARGE = 3000, 1_000_000
BUDGET_GIB = 0.5


@pytest.fixture(scope="module")
def report(tmp_path_factory):
  """The JSON and Markdown reports of the benchmark on SMALL and LARGE items within BUDGET_GIB."""
  folder = tmp_path_factory.mktemp("index_scale")
  exports = folder / "exports"
  result = run_module("benchmarks.index_scale", "--nogowalla", "--nosweep",
                      f"--large_items={SMALL},{LARGE}", "--num_queries=64",
                      f"--memory_budget_gb={BUDGET_GIB}", f"--export_dir={exports}",
                      f"--output={folder / 'out'}", timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(folder / "out.json") as stream:
    content = json.load(stream)
  return content, (folder / "out.md").read_text(), exports


def test_small_size_runs_and_large_size_steps_down(report):
  content, _, _ = report
  small, large = content["large_items"]
  assert small["requested_items"] == SMALL and small["fits"] and small["ran_items"] == SMALL
  assert large["requested_items"] == LARGE and not large["fits"]
  assert large["estimated_memory_bytes"] > large["available_memory_bytes"] == int(
      BUDGET_GIB * index_scale.GIB)
  assert large["reason"].startswith(f"{LARGE:,} did not fit: needs about ")
  assert "GiB available" in large["reason"]
  assert SMALL < large["ran_items"] < LARGE
  assert [catalogue["num_items"] for catalogue in content["catalogues"]] == [
      SMALL, large["ran_items"]]
  assert content["catalogues"][1]["stepped_down_from"] == LARGE
  # The size run instead fits the estimate measured at SMALL items.
  assert (content["memory_margin"] * large["ran_items"] *
          content["catalogues"][0]["memory"]["peak_growth_bytes_per_item"]
          <= large["available_memory_bytes"])


def test_every_index_has_build_export_load_and_recall(report):
  content, _, exports = report
  for catalogue in content["catalogues"]:
    rows = {row["index"]: row for row in catalogue["defaults"]}
    assert set(rows) == {"brute_force", "scann", "portable_ann"}
    assert rows["brute_force"]["recall_at_20"] == 1.0
    for row in rows.values():
      assert row["build_seconds"] >= 0
      assert row["export_bytes"] > 4 * catalogue["num_items"] * catalogue["dim"] * 0.9
      assert row["export_seconds"] > 0 and row["load_seconds"] > 0
      assert row["first_call_seconds"] > 0
      assert row["export_matches"]
      assert 0 <= row["recall_at_20"] <= 1
      assert row["latency_ms_batch_1"] > 0 and row["latency_ms_batch_64"] > 0
      assert row["peak_rss_bytes"] >= catalogue["memory"]["rss_before_bytes"]
    memory = catalogue["memory"]
    assert memory["peak_rss_bytes"] >= max(row["peak_rss_bytes"] for row in rows.values())
    assert memory["peak_growth_bytes_per_item"] > 0
  assert not any(exports.iterdir())  # every export was deleted


def test_markdown_states_the_skip_and_provenance(report):
  content, text, _ = report
  ran = content["large_items"][1]["ran_items"]
  assert f"- {LARGE:,} did not fit: needs about " in text
  assert f"largest run: {ran:,} items" in text
  assert f"## Large synthetic: {ran:,} items" in text
  assert "| export (MB) |" in text and "| load (s) |" in text
  environment = content["environment"]
  assert environment["command"].startswith("python -m benchmarks.index_scale ")
  assert {"date", "cpu", "threads", "tensorflow"} <= set(environment)


def test_largest_fitting_rounds_down_within_budget():
  model = index_scale.MemoryModel(memory_per_item=10_000, export_per_item=1_000, basis=1)
  items = index_scale.largest_fitting(model, 1.2, budget=22 * index_scale.GIB,
                                      free_disk=10**12)
  assert items == 1_900_000  # 22 GiB / 12,000 bytes = 1,968,526
  assert index_scale.plan_size(items, model, 1.2, 22 * index_scale.GIB, 10**12)["fits"]
  # The disk can be the limit too, and the reason then says so.
  plan = index_scale.plan_size(items, model, 1.2, 22 * index_scale.GIB, free_disk=10**9)
  assert not plan["fits"]
  assert "of disk" in index_scale.skip_reason(plan)
  assert index_scale.largest_fitting(model, 1.2, 22 * index_scale.GIB, 10**9) == 830_000


@pytest.mark.parametrize("metrics, expected", [
    ({"epochs": [{"train_examples": 600}], "valid": {"hr_at_20": 47.281}, "test": None},
     ", trained on 600 examples, validation HR@20 47.28"),
    # A refit (--train_on_valid) holds no validation split out: its test number is shown.
    ({"epochs": [{"train_examples": 700}] * 2, "valid": None, "test": {"hr_at_20": 54.08}},
     ", trained on 1,400 examples, test HR@20 54.08")])
def test_the_catalogue_is_described_by_its_run(tmp_path, metrics, expected):
  (tmp_path / "metrics.json").write_text(json.dumps(metrics))
  assert index_scale._training_summary(str(tmp_path)) == expected  # pylint: disable=protected-access
