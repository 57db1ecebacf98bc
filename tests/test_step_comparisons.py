"""The comparisons of issue 6, point 3 that benchmarks/ times: same results, valid settings.

`benchmarks.step_ops.lookup_gradient_parts` times two ways of forming the item table's
gradient when the table is both looked up and multiplied; they must be the same gradient (with
repeated and padding ids, natively and under XLA), or the timing compares different work.
`benchmarks.threads` parses its thread settings and relates each step to the first setting.
"""

import numpy as np
import pytest

from benchmarks import threads
from benchmarks import step_ops


@pytest.mark.parametrize("jit_compile", [False, True])
def test_lookup_gradient_forms_agree(jit_compile):
  items = np.array([[0, 0, 3, 3, 7], [1, 2, 2, 2, 9]], np.int32)
  parts = step_ops.lookup_gradient_parts(items, num_items=11, dim=8, jit_compile=jit_compile)
  dense, scatter = parts["dense"]().numpy(), parts["scatter"]().numpy()
  assert dense.shape == (11, 8)
  np.testing.assert_allclose(scatter, dense, rtol=1e-5, atol=1e-5)
  # Rows 3 and 2 are looked up more than once: their lookup gradient is summed, not overwritten.
  assert not np.allclose(dense[2], dense[10])


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


def test_benchmarks_md_states_each_effect_as_a_ratio():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  rows = [{"variant": "default", "batch_size": 100, "step_ms": 160.0, "ratio": 2.0,
           "step_cached_input_ms": 152.0, "step_lookup_gradient_dense_xla_ms": 20.0,
           "step_lookup_gradient_scatter_xla_ms": 15.0},
          {"variant": "table_dropout=0", "batch_size": 100, "step_ms": 120.0, "ratio": 1.6},
          {"variant": "table_dropout=0", "batch_size": 512, "step_ms": 500.0, "ratio": 2.2}]
  lines = run_all.effects(rows)
  assert lines == [
      "- input pipeline, batch 100: the step fed one cached batch 152.0 ms against 160.0 ms "
      "from the pipeline (0.95x)",
      "- item-table gradient with the lookup's gradient scattered into the product's instead "
      "of made dense, batch 100, xla: 15.0 ms against 20.0 ms (0.75x)",
      "- `table_dropout=0`, batch 100: step 120.0 ms against the default's 160.0 ms (0.75x); to "
      "their floors (timed beside each, so machine noise cancels) 1.60 against 2.00 (0.80x)"]


def test_benchmarks_md_splits_the_step_beyond_its_floor_into_its_parts():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  row = {"variant": "default", "batch_size": 100, "step_ms": 90.0, "floor_ms": 42.0,
         "floor_products_native_ms": 28.0, "floor_products_xla_ms": 30.0,
         "floor_update_native_ms": 18.0, "floor_update_xla_ms": 14.0,
         "step_gradients_ms": 72.0, "step_query_tower_ms": 20.0, "step_scoring_ms": 51.0,
         "step_scoring_without_table_dropout_ms": 40.0, "step_scoring_plain_ms": 34.0,
         "step_update_ms": 16.0}
  lines = run_all.breakdown([row, {"variant": "table_dropout=0", "batch_size": 100}])
  assert lines[0] == ("- batch 100: step 90.0 ms = floor 42.0 ms (products 28.0, update 14.0) "
                      "+ 48.0 ms:")
  values = [float(line.rsplit(": ", 1)[1].split()[0]) for line in lines[1:]]
  assert values == [20.0, 11.0, 6.0, 6.0, 2.0, 2.0]  # 47 of the 48: the parts are timed alone


def test_benchmarks_md_states_each_target_and_where_a_missed_one_spends_its_time():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  def serving(index, clients, p50, rate, in_process):
    return {"index": index, "batching": "off", "batch_size": 1, "clients": clients,
            "p50_ms": p50, "p99_ms": 2 * p50, "requests_per_second": rate,
            "in_process_p50_ms": in_process, "brute_force_floor_p50_ms": 1.2,
            "in_process_embedding_p50_ms": 0.9}
  everything = {
      "train_step": {"results": [
          {"variant": "default", "batch_size": 100, "examples_per_second": 1000.0,
           "floor_examples_per_second": 2400.0, "ratio": 2.2},
          {"variant": "default", "batch_size": 512, "ratio": 1.1}]},
      "evaluation": {"results": [
          {"split": "test", "seconds": 30.0, "peak_rss_gb": 1.0, "eval_batch_size": 500}]},
      "serving": {"results": [serving("brute_force", 8, 16.0, 500.0, 2.7),
                              serving("scann", 8, 10.0, 800.0, 1.6),
                              {**serving("scann", 8, 1.0, 9000.0, 0.5), "batch_size": 64}]}}
  lines = run_all.targets(everything)
  rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:]}
  assert rows["training, batch 100: >= 2,600 examples/s"][1] == "no"
  assert "runs at 2,400 examples/s" in rows["training, batch 100: >= 2,600 examples/s"][2]
  assert rows["training step, batch 512: <= 1.2x its floor"][:2] == ["1.10x", "yes"]
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
