"""What benchmarks/ compares and reports: valid settings, and targets judged from the numbers.

`benchmarks.threads` parses its thread settings and relates each step to the first setting;
`benchmarks.run_all` turns `benchmarks.train_step` and `benchmarks.train_epoch` rows into ratios,
a split of the step beyond its floor and issue 26's targets (met or not).
"""

import pytest

from benchmarks import threads


def test_thread_settings_are_parsed_and_compared():
  assert threads.parse_setting("2:1") == (2, 1)
  for bad in ("2", "a:1", "2:-1", "2:1:0"):
    with pytest.raises(ValueError, match="intra_op:inter_op"):
      threads.parse_setting(bad)
  def row(threads_each, batch_size, step_ms):
    return {"intra_op_threads": threads_each, "inter_op_threads": threads_each,
            "batch_size": batch_size, "step_ms": step_ms, "floor_ms": 50.0,
            "ratio": step_ms / 50.0, "examples_per_second": 1e3 * batch_size / step_ms}
  rows = threads.compare([row(0, 100, 100.0), row(0, 512, 400.0),
                          row(1, 100, 150.0), row(1, 512, 300.0)])
  assert [r["step_vs_first_setting"] for r in rows] == [1.0, 1.0, 1.5, 0.75]
  assert rows[2]["ratio_to_floor"] == 3.0


def _numbers(line):
  """The numbers of a report line, in order."""
  import re  # pylint: disable=g-import-not-at-top
  return [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*\.?\d*", line)]


def test_benchmarks_md_states_each_effect_as_a_ratio():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  rows = [{"variant": "default", "batch_size": 100, "step_ms": 160.0, "ratio": 2.0,
           "step_cached_input_ms": 152.0},
          {"variant": "table_dropout=0", "batch_size": 100, "step_ms": 120.0, "ratio": 1.6},
          {"variant": "table_dropout=0", "batch_size": 512, "step_ms": 500.0, "ratio": 2.2}]
  lines = run_all.effects(rows)
  assert len(lines) == 2  # the batch-512 variant has no default to compare with
  assert _numbers(lines[0])[-3:] == [152.0, 160.0, 0.95]
  assert _numbers(lines[1])[-6:] == [120.0, 160.0, 0.75, 1.6, 2.0, 0.8]


def test_benchmarks_md_splits_the_step_beyond_its_floor_into_its_parts():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  row = {"variant": "default", "batch_size": 100, "step_ms": 60.0, "floor_ms": 38.0,
         "floor_products_native_ms": 20.0, "floor_products_xla_ms": 27.0,
         "floor_update_native_ms": 18.0, "floor_update_xla_ms": 19.0,
         "step_query_tower_ms": 13.0, "step_candidate_rows_ms": 5.0,
         "step_table_gradient_ms": 6.0, "step_softmax_products_ms": 22.0, "step_update_ms": 8.0}
  lines = run_all.breakdown([row, {"variant": "table_dropout=0", "batch_size": 100}])
  assert _numbers(lines[0]) == [100.0, 60.0, 38.0, 20.0, 18.0, 22.0]
  parts = [_numbers(line)[-1] for line in lines[1:]]
  # tower, rows, table gradient, softmax beyond the products, optimizer beyond the update, rest
  assert parts == [13.0, 5.0, 6.0, 2.0, -10.0, 6.0]
  assert sum(parts) == pytest.approx(row["step_ms"] - row["floor_ms"])


def test_training_targets_are_judged_from_the_ratios():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  def step(variant, batch, step_ms, floor_ms):
    return {"variant": variant, "batch_size": batch, "step_ms": step_ms, "floor_ms": floor_ms,
            "ratio": step_ms / floor_ms}
  everything = {
      "train_step": {"results": [
          {**step("default", 100, 60.0, 40.0), "tower_floor_ms": 7.0,
           "ratio_with_tower": 60.0 / 47.0},
          step("default", 512, 130.0, 100.0),
          step("mixed_precision=bfloat16", 100, 45.0, 28.0),
          step("mixed_precision=bfloat16", 512, 140.0, 45.0),
          step("table_dropout=0", 100, 56.0, 40.0)]},
      "epoch": {"results": [{
          "precision": "float32", "batch_size": 100, "epoch_over_step": 0.95,
          "epoch_examples_per_second": 1900.0, "step_examples_per_second": 2000.0,
          "eval_over_epoch": 0.2, "eval_seconds": 60.0, "epoch_seconds": 300.0}]}}
  met = {target: met for target, _, met, _ in run_all.training_targets(everything)}
  assert met == {
      "float32 step, batch 100: <= 1.5x its floor": True,  # 1.50
      "float32 step, batch 100: <= 1.3x the floor plus the query tower's own products": True,
      "bfloat16 step, batch 100: <= 1.5x its floor": False,  # 1.61
      "bfloat16 step faster than float32, batch 100": True,
      "table dropout, batch 100: step <= 1.1x the step without it": True,  # 1.07
      "float32 step, batch 512: <= 1.25x its floor": False,  # 1.30
      "bfloat16 step, batch 512: <= 1.25x its floor": False,
      "bfloat16 step faster than float32, batch 512": False,
      "trainer epoch, float32, batch 100: >= 0.9x the step's examples/s": True,
      "evaluation of valid and test, float32, batch 100: <= 10% of the epoch": False,
  }


def test_benchmarks_md_states_each_target_and_where_a_missed_one_spends_its_time():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  def serving(index, clients, p50, rate, in_process):
    return {"index": index, "batching": "off", "batch_size": 1, "clients": clients,
            "p50_ms": p50, "p99_ms": 2 * p50, "requests_per_second": rate,
            "in_process_p50_ms": in_process, "brute_force_floor_p50_ms": 1.2,
            "in_process_embedding_p50_ms": 0.9}
  everything = {
      "evaluation": {"results": [
          {"split": "test", "seconds": 30.0, "peak_rss_gb": 1.0, "eval_batch_size": 500}]},
      "serving": {"results": [serving("brute_force", 8, 16.0, 500.0, 2.7),
                              serving("scann", 8, 10.0, 800.0, 1.6),
                              {**serving("scann", 8, 1.0, 9000.0, 0.5), "batch_size": 64}]}}
  lines = run_all.targets(everything)
  rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:]}
  assert rows["evaluation of the Gowalla test split: < 60 s within 4 GB"][1] == "yes"
  assert "takes 1.20 ms" in rows["in process, brute force, batch 1: < 1 ms"][2]
  # The best batch-1 row with 8 clients (the batch-64 row does not count), and Little's law.
  eight = rows["gRPC, 8 clients, batch 1: p50 < 3 ms, p99 < 15 ms"]
  assert eight[0].startswith("p50 10.0 ms, p99 20.0 ms (scann") and eight[1] == "no"
  assert "8 / 800 requests/s = 10.0 ms" in eight[2]
  assert rows["gRPC, batch 1: >= 1,000 requests/s"][0].startswith("800 requests/s")
  assert run_all.targets({}) == []


def test_serving_floor_times_both_table_layouts_and_keeps_the_fastest():
  from benchmarks import serving  # pylint: disable=g-import-not-at-top
  floors = serving.brute_force_floor(num_items=500, dim=16, batch_sizes=[1, 4], seconds=0.01)
  for floor in floors.values():
    assert floor["floor"] == min(floor["n_by_d"], floor["d_by_n"]) > 0
  rows = [{"batch_size": 4, "in_process_p50_ms": 2 * floors[4]["floor"]}]
  serving.add_floor(rows, floors)
  assert rows[0]["in_process_over_floor"] == 2.0
  assert rows[0]["exact_search_d_by_n_p50_ms"] == floors[4]["d_by_n"]


def test_throughput_table_has_one_row_per_batch_and_one_column_per_variant():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  def row(variant, batch, rate, floor_rate):
    return {"variant": variant, "batch_size": batch, "examples_per_second": rate,
            "floor_examples_per_second": floor_rate, "ratio": floor_rate / rate}
  lines = run_all.throughput([row("default", 512, 2800.0, 5000.0),
                              row("default", 100, 1800.0, 2700.0),
                              row("mixed_precision=bfloat16", 100, 2100.0, 3500.0)])
  assert len(lines) == 4 and lines[0].count("|") == 4
  assert _numbers(lines[2])[:5] == [100.0, 1800.0, 2700.0, 1.5, 2100.0]
  assert lines[3].startswith("| 512 |") and lines[3].endswith("|  |")  # no bfloat16 row
