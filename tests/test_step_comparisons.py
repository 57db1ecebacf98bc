"""What benchmarks/ compares and reports: valid settings, and targets judged from the numbers.

`benchmarks.threads` parses its thread settings and relates each step to the first setting;
`benchmarks.run_all` turns `benchmarks.train_step` and `benchmarks.train_epoch` rows into ratios
(`compare_with_default`), a split of the step beyond its floor (`step_parts`), a throughput grid
(`throughput_grid`) and issue 26's and issue 6's targets (`judge`: met or not, from which
figures, judged on which row). The tests check those structured results; of the rendered
Markdown only that it carries the same numbers.
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


def test_each_variant_and_the_cached_input_are_compared_with_the_default_step():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  rows = [{"variant": "default", "batch_size": 100, "step_ms": 160.0, "ratio": 2.0,
           "step_cached_input_ms": 152.0},
          {"variant": "table_dropout=0", "batch_size": 100, "step_ms": 120.0, "ratio": 1.6},
          {"variant": "table_dropout=0", "batch_size": 512, "step_ms": 500.0, "ratio": 2.2}]
  cached, dropout = run_all.compare_with_default(rows)  # batch 512 has no default to compare with
  assert (cached.variant, cached.batch_size) == (None, 100)
  assert (cached.step_ms, cached.default_step_ms) == (152.0, 160.0)
  assert cached.step_over_default == pytest.approx(0.95)
  assert cached.ratio_over_default is None
  assert (dropout.variant, dropout.batch_size) == ("table_dropout=0", 100)
  assert (dropout.step_ms, dropout.default_step_ms) == (120.0, 160.0)
  assert dropout.step_over_default == pytest.approx(0.75)
  assert (dropout.ratio, dropout.default_ratio) == (1.6, 2.0)
  assert dropout.ratio_over_default == pytest.approx(0.8)
  lines = run_all.effects(rows)
  assert len(lines) == 2 and "0.95x" in lines[0]
  assert all(number in lines[1] for number in ("120.0", "160.0", "0.75x", "0.80x"))


def test_the_step_beyond_its_floor_is_split_into_its_parts():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  row = {"variant": "default", "batch_size": 100, "step_ms": 60.0, "floor_ms": 38.0,
         "floor_products_native_ms": 20.0, "floor_products_xla_ms": 27.0,
         "floor_update_native_ms": 18.0, "floor_update_xla_ms": 19.0,
         "step_query_tower_ms": 13.0, "step_candidate_rows_ms": 5.0,
         "step_table_gradient_ms": 6.0, "step_softmax_products_ms": 22.0, "step_update_ms": 8.0}
  products, update, parts = run_all.step_parts(row)
  assert (products, update) == (20.0, 18.0)  # the faster of native and XLA
  assert {part.key: part.ms for part in parts} == {
      "query_tower": 13.0, "candidate_rows": 5.0, "table_gradient": 6.0,
      "softmax_products": 2.0,  # 22 - 20
      "update": -10.0,  # 8 - 18: the fused optimizer beats the floor's update
      "rest": 6.0}  # 60 - (13 + 5 + 6 + 22 + 8)
  assert sum(part.ms for part in parts) == pytest.approx(row["step_ms"] - row["floor_ms"])
  lines = run_all.breakdown([row, {"variant": "table_dropout=0", "batch_size": 100}])
  assert len(lines) == 1 + len(parts)  # only the default row has parts
  assert all(number in lines[0] for number in ("60.0", "38.0", "20.0", "18.0", "22.0"))
  assert [line.endswith(f"{part.ms:.1f} ms") for line, part in zip(lines[1:], parts)] == [
      True] * len(parts)


def _step(variant, batch, step_ms, floor_ms, **more):
  return {"variant": variant, "batch_size": batch, "step_ms": step_ms, "floor_ms": floor_ms,
          "ratio": step_ms / floor_ms, **more}


def test_training_targets_are_judged_from_the_ratios():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  # A batch-512 step with a split: 30 ms beyond its floor, most in the tower and the rest.
  split = {"floor_products_native_ms": 60.0, "floor_products_xla_ms": 70.0,
           "floor_update_native_ms": 40.0, "floor_update_xla_ms": 45.0,
           "step_query_tower_ms": 15.0, "step_candidate_rows_ms": 2.0,
           "step_table_gradient_ms": 3.0, "step_softmax_products_ms": 64.0,
           "step_update_ms": 38.0}
  everything = {
      "train_step": {"results": [
          _step("default", 100, 60.0, 40.0, tower_floor_ms=7.0, ratio_with_tower=60.0 / 47.0),
          _step("default", 512, 130.0, 100.0, tower_floor_ms=20.0, **split),
          _step("mixed_precision=bfloat16", 100, 45.0, 28.0),
          _step("mixed_precision=bfloat16", 512, 140.0, 45.0),
          _step("table_dropout=0", 100, 56.0, 40.0)]},
      "train_step_diginetica": {"results": [_step("default", 100, 50.0, 40.0)]},
      "epoch": {"results": [{
          "precision": "float32", "batch_size": 100, "epoch_over_step": 0.95,
          "epoch_examples_per_second": 1900.0, "step_examples_per_second": 2000.0,
          "eval_over_epoch": 0.2, "eval_seconds": 60.0, "epoch_seconds": 300.0}]}}
  judged = {t.key: t for t in run_all.training_targets(everything)}
  assert {key: (t.figures["ratio"] if "ratio" in t.figures else t.figures["share"], t.met)
          for key, t in judged.items()} == {
      "train_step/step_over_floor/float32/100": (1.5, True),  # the limit itself is met
      "train_step/step_over_floor_and_tower/float32/100": (pytest.approx(60 / 47), True),
      "train_step/step_over_floor/bfloat16/100": (pytest.approx(45 / 28), False),
      "train_step/bfloat16_over_float32/100": (0.75, True),
      "train_step/dropout_over_none/100": (pytest.approx(60 / 56), True),
      "train_step/step_over_floor/float32/512": (1.3, False),
      "train_step/step_over_floor/bfloat16/512": (pytest.approx(140 / 45), False),
      "train_step/bfloat16_over_float32/512": (pytest.approx(140 / 130), False),
      "epoch/epoch_over_step/float32/100": (0.95, True),
      "epoch/evaluation_share/float32/100": (0.2, False),
  }
  limits = {key: t.figures.get("limit") for key, t in judged.items()}
  assert limits["train_step/step_over_floor/float32/100"] == 1.5
  assert limits["train_step/step_over_floor/float32/512"] == 1.25
  assert limits["train_step/step_over_floor_and_tower/float32/100"] == 1.3
  assert limits["train_step/dropout_over_none/100"] == 1.1
  assert limits["epoch/epoch_over_step/float32/100"] == 0.9
  assert limits["epoch/evaluation_share/float32/100"] == 0.1
  # Where a missed step's time goes: its two largest parts, largest first.
  missed = judged["train_step/step_over_floor/float32/512"]
  assert missed.causes == ("query_tower", "rest")  # 15 and 8 ms; softmax 4, update -2
  assert "30 ms" in missed.why and "15 ms" in missed.why and "8 ms" in missed.why
  # Its parts with the tower at its products' floor: 64 + 2 + 3 + 38 + 20 = 127 ms > 1.25 x 100.
  assert missed.figures["reachable_ratio"] == pytest.approx(1.27)
  assert "Out of reach" in missed.why and "127 ms, 1.27x" in missed.why
  assert judged["train_step/step_over_floor/bfloat16/512"].causes == ()  # no split measured
  # The Diginetica entry has its own keys and no epoch targets.
  diginetica = run_all.training_targets(everything, "train_step_diginetica", "Diginetica: ")
  assert [(t.key, t.met) for t in diginetica] == [
      ("train_step_diginetica/step_over_floor/float32/100", True)]
  assert diginetica[0].name.startswith("Diginetica: ")


def _serving(index, clients, p50, rate, in_process):
  return {"index": index, "batching": "off", "batch_size": 1, "clients": clients,
          "p50_ms": p50, "p99_ms": 2 * p50, "requests_per_second": rate,
          "in_process_p50_ms": in_process, "brute_force_floor_p50_ms": 1.2,
          "in_process_embedding_p50_ms": 0.9}


def test_evaluation_and_serving_targets_are_judged_on_the_right_rows():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  evaluations = [{"split": "valid", "seconds": 10.0, "peak_rss_gb": 9.0, "eval_batch_size": 500},
                 {"split": "test", "seconds": 45.0, "peak_rss_gb": 1.5, "eval_batch_size": 500},
                 {"split": "test", "seconds": 30.0, "peak_rss_gb": 1.0, "eval_batch_size": 2000}]
  scann = _serving("scann", 8, 10.0, 800.0, 1.6)
  batched = {**_serving("scann", 8, 1.0, 9000.0, 0.5), "batch_size": 64}  # not a batch-1 row
  brute = _serving("brute_force", 8, 16.0, 500.0, 0.8)
  fewer = _serving("scann", 4, 5.0, 700.0, 1.6)  # not 8 clients
  everything = {"evaluation": {"results": evaluations},
                "serving": {"results": [brute, scann, batched, fewer]}}
  judged = {t.key: t for t in run_all.judge(everything)}
  assert list(judged) == ["evaluation/test_split", "serving/in_process/brute_force",
                          "serving/grpc_latency/8_clients", "serving/grpc_throughput"]
  evaluation = judged["evaluation/test_split"]  # the fastest test-split row
  assert evaluation.row is evaluations[2] and evaluation.met
  assert (evaluation.figures["seconds"], evaluation.figures["peak_rss_gb"]) == (30.0, 1.0)
  in_process = judged["serving/in_process/brute_force"]
  assert in_process.row is brute and in_process.met
  assert (in_process.figures["p50_ms"], in_process.figures["search_p50_ms"]) == (0.8, 1.2)
  latency = judged["serving/grpc_latency/8_clients"]  # lowest batch-1 p50 with 8 clients
  assert latency.row is scann and not latency.met
  assert (latency.figures["p50_ms"], latency.figures["p99_ms"]) == (10.0, 20.0)
  # Little's law: 8 waiting clients at 800 requests/s see 10 ms; 3 ms needs 8 / 3 ms.
  assert latency.figures["clients_over_throughput_ms"] == pytest.approx(10.0)
  assert latency.figures["needed_requests_per_second"] == pytest.approx(8000 / 3)
  assert latency.figures["core_ms_per_request"] == pytest.approx(0.75)  # 2 cores by default
  rate = judged["serving/grpc_throughput"]  # the highest batch-1 rate
  assert rate.row is scann and not rate.met
  assert rate.figures["most_calls_per_second"] == pytest.approx(2000 / 1.6)
  # The table: one line per target; "where the time goes" only for a missed one.
  lines = run_all.targets(everything)
  cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
  assert [row[2] == "yes" for row in cells] == [t.met for t in judged.values()]
  assert [bool(row[3]) for row in cells] == [not t.met for t in judged.values()]
  assert all(number in lines[4] for number in ("10.0", "20.0", "800", "2,667", "0.75"))
  assert run_all.judge({}) == [] and run_all.targets({}) == []


def test_serving_floor_times_both_table_layouts_and_keeps_the_fastest():
  from benchmarks import serving  # pylint: disable=g-import-not-at-top
  floors = serving.brute_force_floor(num_items=500, dim=16, batch_sizes=[1, 4], seconds=0.01)
  for floor in floors.values():
    assert floor["floor"] == min(floor["n_by_d"], floor["d_by_n"]) > 0
  rows = [{"batch_size": 4, "in_process_p50_ms": 2 * floors[4]["floor"]}]
  serving.add_floor(rows, floors)
  assert rows[0]["in_process_over_floor"] == 2.0
  assert rows[0]["exact_search_d_by_n_p50_ms"] == floors[4]["d_by_n"]


def test_throughput_grid_has_one_row_per_batch_and_one_column_per_variant():
  from benchmarks import run_all  # pylint: disable=g-import-not-at-top
  def row(variant, batch, rate, floor_rate):
    return {"variant": variant, "batch_size": batch, "examples_per_second": rate,
            "floor_examples_per_second": floor_rate, "ratio": floor_rate / rate}
  rows = [row("default", 512, 2800.0, 5000.0), row("default", 100, 1800.0, 2700.0),
          row("mixed_precision=bfloat16", 100, 2100.0, 3500.0)]
  variants, grid = run_all.throughput_grid(rows)
  assert variants == ["default", "mixed_precision=bfloat16"]  # in order of appearance
  assert grid == [(100, [rows[1], rows[2]]), (512, [rows[0], None])]  # no bfloat16 at 512
  lines = run_all.throughput(rows)
  assert len(lines) == 2 + len(grid)
  assert all(number in lines[2] for number in ("1,800", "2,700", "1.50x", "2,100"))
  assert lines[3].endswith("|  |")  # the missing cell is empty
