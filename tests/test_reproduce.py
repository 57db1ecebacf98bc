"""`benchmarks.reproduce` end to end on a tiny synthetic dataset, and the per-length metrics.

Table 2 is reproduced once (short protocol, every row trained on the synthetic dataset with a tiny
model, in a temporary runs and results folder); Figures 5 and 7 reuse its runs where rows are
shared, so the file trains seven tiny runs in all.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest

from conftest import run_module

TINY = ["--synthetic_items=100", "--synthetic_sessions=500", "--num_shards=2",
        "--embedding_dim=16", "--num_heads=2", "--max_steps_per_epoch=3", "--jit_compile=false"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("reproduce")
  return {"results": root / "results", "runs": root / "runs", "prepared": root / "prepared"}


def reproduce(folders, *args, expect=0):
  """Runs the runner on the synthetic dataset; returns the finished process, whose exit code is
  checked against `expect`."""
  result = run_module("benchmarks.reproduce", *args, "--protocol=short",
                      "--dataset_override=synthetic", f"--results_dir={folders['results']}",
                      f"--runs_dir={folders['runs']}", "--", *TINY,
                      f"--output_dir={folders['prepared']}")
  assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
  return result


def output_of(folders, name):
  """The Markdown, the JSON and the path stem of a table written by `reproduce`: `name` is the
  table, followed by the protocol where that is not the table's own (`2-short`, `4-full`)."""
  stem = folders["results"] / "reproduction" / f"{name}-on-synthetic"
  with open(f"{stem}.md") as markdown, open(f"{stem}.json") as table_json:
    return markdown.read(), json.load(table_json), stem


@pytest.fixture(scope="module")
def table_2(folders):
  return reproduce(folders, "--table=2")


def metrics_mtimes(folders):
  pattern = folders["runs"] / "reproduction" / "short"
  return {name: os.path.getmtime(pattern / name / "metrics.json")
          for name in os.listdir(pattern) if (pattern / name / "metrics.json").is_file()}


def test_table_has_every_row_with_ours_published_and_difference(folders, table_2):
  markdown, table, _ = output_of(folders, "2-short")
  assert "**Protocol: short**" in markdown and "1 epoch(s)" in markdown
  assert [row["name"] for row in table["rows"]] == [
      "gowalla-attenmixer", "diginetica_srgnn-attenmixer",
      "diginetica_srgnn-attenmixer-initializationkeras", "gowalla-srgnn", "gowalla-niser"]
  for row in table["rows"]:
    assert row["status"] == "finished" and len(row["runs"]) == 1, row
    assert row["runs"][0]["epochs_trained"] == 1
    for metric in ("HR@20", "MRR@20"):
      # ours (honest) | ours (authors' protocol) | published | compared with | difference
      line = re.compile(rf"^\| {re.escape(row['label'])} \| {metric} \| \d+\.\d\d \| \d+\.\d\d "
                        rf"\| \d+\.\d\d \| [^|]+ \| [+-]\d+\.\d\d \|$", re.M)
      assert line.search(markdown), (row["label"], metric, markdown)
  assert "| GCE-GNN |" in markdown and "| NISER+ (Table 2) |" in markdown
  assert "directions checked agree with the paper" in markdown
  assert "Target " in markdown
  copies = folders["results"] / "reproduction" / "short" / "gowalla-srgnn-on-synthetic"
  assert {"metrics.json", "config.json", "command.txt",
          "gowalla-srgnn-on-synthetic.log"} <= set(os.listdir(copies))


def test_rerun_skips_finished_rows_and_reruns_a_removed_one(folders, table_2):
  before = metrics_mtimes(folders)
  removed = folders["runs"] / "reproduction" / "short" / "gowalla-niser-on-synthetic"
  os.remove(removed / "metrics.json")  # As if the run had been killed before its results...
  shutil.rmtree(folders["results"] / "reproduction" / "short" / removed.name)  # ...were copied.
  result = reproduce(folders, "--table=2")
  for name in before:
    if name != removed.name:
      assert f"skipped {name}: finished" in result.stderr
  assert f"running {removed.name}" in result.stderr
  after = metrics_mtimes(folders)
  assert set(after) == set(before)
  assert all(after[name] == before[name] for name in before if name != removed.name)


def test_fig5_draws_a_png_and_shares_the_l3_run(folders, table_2):
  result = reproduce(folders, "--table=fig5", "--rows=gowalla-attenmixer_m")
  assert "skipped gowalla-attenmixer-on-synthetic" not in result.stderr  # Not selected.
  assert "running gowalla-attenmixer_m-on-synthetic" in result.stderr  # L = 1: Table 4's -M.
  markdown, table, stem = output_of(folders, "fig5")
  assert open(f"{stem}.png", "rb").read(8) == PNG_SIGNATURE
  statuses = {row["label"]: row["status"] for row in table["rows"]}
  assert statuses["L = 1"] == statuses["L = 3"] == "finished"  # L = 3: Table 2's run.
  assert statuses["L = 7"] == "not run"
  assert re.search(r"^\| L = 3 \| HR@20 \| [\d.]+ \| [\d.]+ \| 55\.12 \| paper \|", markdown, re.M)
  for split in ("validation", "test"):
    assert re.search(rf"Best L on {split} HR@20: [13] \(\d+\.\d\d; the 2 values", markdown)
  assert re.search(r"^\| L = 1 \| \d+\.\d\d \| \d+\.\d\d \|$", markdown, re.M)  # Validation.


def test_fig7_evaluates_both_runs_by_session_length(folders, table_2):
  result = reproduce(folders, "--table=fig7")
  assert "running" not in result.stderr  # Both rows are Table 2's runs.
  markdown, table, stem = output_of(folders, "fig7")
  assert open(f"{stem}.png", "rb").read(8) == PNG_SIGNATURE
  assert "## By session length" in markdown
  by_length = table["by_length"]
  assert set(by_length) == {"gowalla-attenmixer", "gowalla-srgnn"}
  groups = by_length["gowalla-attenmixer"]
  assert groups["short (<= 5)"]["examples"] == sum(groups[str(n)]["examples"] for n in range(1, 6))
  assert groups["short (<= 5)"]["examples"] > 0
  assert 0 <= groups["short (<= 5)"]["hr_at_20"]["mean"] <= 100


def test_a_fresh_checkout_uses_the_committed_copies_and_trains_nothing(folders, table_2):
  """Run folders are not committed. With only the copies in results/ (and Figure 7's metrics by
  session length kept beside them), a rerun trains nothing and writes the same tables; a copy of
  a run of another configuration is reported, not shown."""
  reproduce(folders, "--table=fig7")
  _, before, _ = output_of(folders, "fig7")
  copies = folders["results"] / "reproduction" / "short"
  hidden = folders["runs"].with_name("runs-hidden")
  folders["runs"].rename(hidden)
  try:
    result = reproduce(folders, "--table=2")
    assert "running" not in result.stderr and "is absent; " in result.stderr
    _, table, _ = output_of(folders, "2-short")
    assert {row["status"] for row in table["rows"]} == {"finished"}
    assert not folders["runs"].exists()
    reproduce(folders, "--table=fig7")
    _, after, _ = output_of(folders, "fig7")
    assert after["by_length"] == before["by_length"]
    kept = copies / "gowalla-srgnn-on-synthetic" / "session_length_test.json"
    kept.rename(kept.with_name("hidden.json"))  # Neither kept nor computable: not drawn, said so.
    reproduce(folders, "--table=fig7")
    markdown, after, _ = output_of(folders, "fig7")
    assert set(after["by_length"]) == {"gowalla-attenmixer"}
    assert "Not drawn: gowalla-srgnn-on-synthetic, whose copy has no" in markdown
    kept.with_name("hidden.json").rename(kept)
    config_path = copies / "gowalla-srgnn-on-synthetic" / "config.json"
    original = config_path.read_text()
    stored = json.loads(original)
    stored["experiment"]["model"]["initialization"] = "keras"
    config_path.write_text(json.dumps(stored))
    stale = reproduce(folders, "--table=2", expect=1)
    assert (f"{config_path.parent} holds a finished run of another configuration "
            "(model.initialization: 'keras' -> 'uniform')") in stale.stderr, stale.stderr[-3000:]
    _, table, _ = output_of(folders, "2-short")
    assert {row["name"]: row["status"] for row in table["rows"]}["gowalla-srgnn"] == "not run"
    config_path.write_text(original)
  finally:
    shutil.rmtree(folders["runs"], ignore_errors=True)
    hidden.rename(folders["runs"])


def test_options_table_compares_validation_with_the_default_row(folders, table_2):
  result = reproduce(folders, "--table=options", "--rows=gowalla-attenmixer-table_dropout0.0")
  assert "skipped gowalla-attenmixer-on-synthetic" not in result.stderr  # Not selected...
  markdown, table, _ = output_of(folders, "options")
  rows = {row["name"]: row for row in table["rows"]}
  assert rows["gowalla-attenmixer"]["status"] == "finished"  # ...but Table 2's run is shown.
  trained = rows["gowalla-attenmixer-table_dropout0.0"]
  assert trained["status"] == "finished" and trained["flags"] == {"table_dropout": 0.0}
  config = json.load(open(folders["runs"] / "reproduction" / "short" /
                          "gowalla-attenmixer-table_dropout0.0-on-synthetic" / "config.json"))
  assert config["experiment"]["model"]["table_dropout"] == 0.0
  assert rows["gowalla-attenmixer-batch_size512-learning_rate0.002263"]["status"] == "not run"
  assert "## Validation split" in markdown
  assert re.search(r"^\| no table dropout \(faster step\) \| \d+\.\d\d \| \d+\.\d\d \|$",
                   markdown, re.M), markdown
  verdict = re.search(r"no table dropout \(faster step\): validation HR@20 ([+-][\d.]+), "
                      r"MRR@20 ([+-][\d.]+); (better|not better|worse) than", markdown)
  assert verdict, markdown
  valid = {name: rows[name]["valid"]["hr_at_20"]["mean"]
           for name in ("gowalla-attenmixer", "gowalla-attenmixer-table_dropout0.0")}
  assert float(verdict.group(1)) == pytest.approx(
      valid["gowalla-attenmixer-table_dropout0.0"] - valid["gowalla-attenmixer"], abs=0.006)
  assert trained["runs"][0]["peak_rss_bytes"] > 100e6  # TensorFlow alone needs more.
  # The machine's load when each epoch's training ended, beside the speeds it qualifies.
  assert trained["runs"][0]["load_average_max"] >= 0
  # ...and the CPU both trained on, in the note and in the runs table.
  from trainer.hardware import cpu_model  # pylint: disable=g-import-not-at-top
  assert trained["runs"][0]["cpu"] == cpu_model()
  assert re.search(r"machine load at their epochs' ends \d+\.\d and \d+\.\d; CPU "
                   + re.escape(cpu_model()) + r"\)", markdown), markdown
  assert re.search(r"^\| no table dropout \(faster step\) \| .* \| "
                   + re.escape(cpu_model()) + r" \|$", markdown, re.M), markdown


def test_metrics_by_length_on_a_handmade_example():
  from benchmarks.session_length import metrics_by_length
  result = metrics_by_length(ranks=np.array([1, 3, 25, 2, 20, 21]),
                             lengths=np.array([1, 6, 2, 12, 5, 1]), k=20)
  assert result["short (<= 5)"] == pytest.approx(
      {"examples": 4, "hr_at_20": 50.0, "mrr_at_20": 100 * (1 + 1 / 20) / 4})
  assert result["long (> 5)"] == pytest.approx(
      {"examples": 2, "hr_at_20": 100.0, "mrr_at_20": 100 * (1 / 3 + 1 / 2) / 2})
  assert result["1"] == pytest.approx({"examples": 2, "hr_at_20": 50.0, "mrr_at_20": 50.0})
  assert result["2"] == {"examples": 1, "hr_at_20": 0.0, "mrr_at_20": 0.0}
  assert result["3"] == {"examples": 0, "hr_at_20": None, "mrr_at_20": None}


def test_ranks_and_lengths_match_a_direct_numpy_computation():
  import tensorflow as tf
  from benchmarks.session_length import metrics_by_length, ranks_and_lengths
  from tfrs_attenmixer.config import ModelConfig
  from tfrs_attenmixer.model import SessionRetrievalModel
  tf.random.set_seed(0)
  num_items, max_length = 40, 8
  model = SessionRetrievalModel(ModelConfig(embedding_dim=8, num_heads=2), num_items)
  generator = np.random.default_rng(0)
  lengths = np.array([1, 2, 3, 5, 6, 8, 8, 4, 1, 7])
  items = np.zeros([len(lengths), max_length], np.int32)
  for i, length in enumerate(lengths):
    items[i, max_length - length:] = generator.integers(1, num_items + 1, length)
  targets = generator.integers(1, num_items + 1, len(lengths)).astype(np.int32)
  batches = [{"items": items[:6], "target": targets[:6]},
             {"items": items[6:], "target": targets[6:]}]

  ranks, found_lengths = ranks_and_lengths(model, batches)

  scores = model.catalogue_logits(model(items, training=False)).numpy()
  expected_ranks = 1 + (scores > scores[np.arange(len(targets)), targets - 1][:, None]).sum(1)
  np.testing.assert_array_equal(ranks, expected_ranks)
  np.testing.assert_array_equal(found_lengths, lengths)
  k = 5
  result = metrics_by_length(ranks, found_lengths, k=k)
  for group, mask in (("short (<= 5)", lengths <= 5), ("long (> 5)", lengths > 5),
                      ("8", lengths == 8)):
    hits = expected_ranks[mask] <= k
    assert result[group]["hr_at_5"] == pytest.approx(100 * hits.mean())
    assert result[group]["mrr_at_5"] == pytest.approx(
        100 * np.where(hits, 1 / expected_ranks[mask], 0).mean())


def test_make_bench_epoch_rows_are_rows_of_the_options_table():
  from benchmarks import reproduce
  from benchmarks import run_all
  names = {table_row.name for table_row in reproduce.TABLES["options"]["rows"]}
  assert set(run_all.EPOCH_ROWS) <= names, sorted(names)


def test_full_protocol_shares_the_run_of_benchmarks_full_run(tmp_path):
  """Under the full protocol, a row with the paper's configuration of its variant IS the run of
  `benchmarks.full_run` (its stage folders, its results' names), so it is not trained twice;
  seeds and rows with changed options get folders of their own."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl.testing import flagsaver  # pylint: disable=g-import-not-at-top
  from benchmarks import reproduce as runner  # pylint: disable=g-import-not-at-top
  from benchmarks import trainer_runs  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  flags.FLAGS.mark_as_parsed()
  gowalla = runner.GOWALLA_ATTENMIXER
  changed = next(r for r in runner.TABLES["options"]["rows"] if r.flags)
  full_run = tmp_path / "gowalla-attenmixer-full"
  with flagsaver.flagsaver(protocol="full", runs_dir=str(tmp_path), dataset_override=None,
                           results_dir=str(tmp_path / "results")):
    assert runner._base(gowalla) == str(full_run)
    selection = runner._run_dir(gowalla, None)
    assert selection == str(full_run / "selection")
    assert trainer_runs.refit_dir(selection) == str(full_run / "refit")
    copies = tmp_path / "results" / "reproduction" / "full"
    assert runner._copy_of(selection) == str(copies / "gowalla-attenmixer-full")
    assert runner._copy_of(trainer_runs.refit_dir(selection)) == str(
        copies / "gowalla-attenmixer-full-refit")
    args = runner.trainer_args(gowalla, None, selection, ["--epochs=2"])
    assert f"--run_dir={selection}" in args and "--protocol=selection" in args
    assert runner._run_dir(gowalla, "1") == f"{full_run}-seed1"
    assert "--seed=1" in runner.trainer_args(gowalla, "1", f"{full_run}-seed1", [])
    assert runner._base(changed).startswith(str(tmp_path / "reproduction" / "full"))
  with flagsaver.flagsaver(protocol="short", runs_dir=str(tmp_path), dataset_override=None):
    assert runner._base(gowalla) == str(tmp_path / "reproduction" / "short" /
                                        "gowalla-attenmixer")


def test_full_run_selects_on_validation_then_refits_on_all_training_sessions(tmp_path):
  args = ["--dataset=synthetic", f"--runs_dir={tmp_path / 'runs'}",
          f"--results_dir={tmp_path / 'results'}", "--", *TINY, "--epochs=3", "--patience=1",
          "--export_indexes=", f"--output_dir={tmp_path / 'prepared'}"]
  result = run_module("benchmarks.full_run", *args)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  results = tmp_path / "results" / "synthetic" / "attenmixer"
  with open(results / "metrics.json") as selection, open(results / "refit" / "metrics.json") as f:
    selection, refit = json.load(selection), json.load(f)
  # The refit trains the configuration that was selected, on every training session, for the
  # selected number of epochs; its last epoch is its result.
  assert refit["epochs_trained"] == refit["selected_epoch"] == selection["selected_epoch"]
  assert refit["config"]["train"]["train_on_valid"] and refit["valid"] is None
  assert refit["steps_per_epoch"] == selection["steps_per_epoch"] == 3  # --max_steps_per_epoch
  for folder in (results, results / "refit"):
    with open(folder / "command.txt") as command:
      assert command.read().startswith("python -m benchmarks.full_run --dataset=synthetic")
  # A rerun finds both stages finished and trains nothing; so does one in a fresh checkout whose
  # run folders are gone but whose results hold the selection stage: only the refit is trained.
  again = run_module("benchmarks.full_run", *args)
  assert again.returncode == 0 and "epoch 1/" not in again.stdout + again.stderr
  shutil.rmtree(tmp_path / "runs")
  shutil.rmtree(results / "refit")
  fresh = run_module("benchmarks.full_run", *args)
  assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
  assert f"refitting from {results}" in fresh.stdout + fresh.stderr
  assert not (tmp_path / "runs" / "synthetic-attenmixer-full" / "selection").exists()
  with open(results / "refit" / "metrics.json") as f:
    assert json.load(f)["epochs_trained"] == selection["selected_epoch"]
  # A stage finished under an earlier default is not this command's run today: it is reported,
  # neither reused nor overwritten, whether only its results are left or its run folder too.
  refit_run = tmp_path / "runs" / "synthetic-attenmixer-full" / "refit"
  for config_path in (results / "config.json", refit_run / "config.json"):
    original = config_path.read_text()
    stored = json.loads(original)
    stored["experiment"]["model"]["initialization"] = "keras"
    config_path.write_text(json.dumps(stored))
    stale = run_module("benchmarks.full_run", *args)
    assert stale.returncode == 2, stale.stdout[-3000:] + stale.stderr[-3000:]
    assert (f"{config_path.parent} holds a finished run of another configuration "
            "(model.initialization: 'keras' -> 'uniform')") in stale.stderr, stale.stderr[-3000:]
    assert "epoch 1/" not in stale.stdout + stale.stderr
    config_path.write_text(original)


def test_full_protocol_refits_each_row_and_reports_the_refit(tmp_path):
  folders = {"results": tmp_path / "results", "runs": tmp_path / "runs"}

  def full_protocol(*extra):
    result = run_module("benchmarks.reproduce", "--table=4", "--protocol=full",
                        "--rows=gowalla-attenmixer", "--dataset_override=synthetic",
                        f"--results_dir={folders['results']}", f"--runs_dir={folders['runs']}",
                        *extra, "--", *TINY, "--epochs=2", f"--output_dir={tmp_path / 'prepared'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_of(folders, "4-full")

  # --notrain writes the table from what is finished (nothing yet) and trains nothing.
  _, table, _ = full_protocol("--notrain")
  assert {row["status"] for row in table["rows"]} == {"not run"}
  assert not folders["runs"].exists()
  markdown, table, _ = full_protocol()
  # Table 4 is published under the short protocol: its full-protocol table has a file of its own.
  assert not (folders["results"] / "reproduction" / "4-on-synthetic.md").exists()
  full = next(row for row in table["rows"] if row["name"] == "gowalla-attenmixer")
  run = full["runs"][0]
  assert full["honest_is_refit"] and run["refit"]["folder"] == run["folder"] + "-refit"
  assert run["refit"]["epochs_trained"] == run["selected_epoch"]
  assert full["honest"] == full["refit"]
  assert full["honest"]["hr_at_20"]["mean"] == run["refit"]["test"]["hr_at_20"]
  assert full["selected"]["hr_at_20"]["mean"] == run["test"]["hr_at_20"]
  assert "| selected epoch |" in markdown and "(refit: --train_on_valid" in markdown
  copies = folders["results"] / "reproduction" / "full"
  assert (copies / (run["folder"] + "-refit") / "metrics.json").is_file()


def test_a_disagreement_is_measured_against_the_seed_spread():
  from benchmarks import reproduce as runner  # pylint: disable=g-import-not-at-top
  def row(label, *values):
    return {"label": label, "honest": {"hr_at_20": runner.mean_std(values),
                                       "mrr_at_20": runner.mean_std(values)}}
  spec = {"metrics": ("hr_at_20",), "higher": (("full", "ablation"),)}
  seeded = {"full": row("Full", 45.9, 46.1), "ablation": row("Ablation", 46.05)}
  (line, summary, within) = runner.notes(spec, seeded)
  assert line == ("Disagrees with the paper: Full HR@20 46.00 < Ablation 46.05 (the paper has it "
                  "higher), by 0.05: below the standard deviation over seeds of Full (0.141, 2 "
                  "seeds; the gap is 0.4 of it).")
  assert summary.startswith("0 of 1 directions checked agree")
  assert within.startswith("1 of the 1 differences are smaller than the standard deviation")
  agrees = {"full": row("Full", 45.9, 46.1), "ablation": row("Ablation", 45.95)}
  assert runner.notes(spec, agrees)[0].startswith("1 of 1 directions checked agree")
  assert runner.notes(spec, agrees)[1].startswith("1 of the 1 differences are smaller")
  far = {"full": row("Full", 45.9, 46.1), "ablation": row("Ablation", 47.0)}
  assert len(runner.notes(spec, far)) == 2  # No difference within the spread.
  assert "by 1.00: above the standard deviation" in runner.notes(spec, far)[0]
  single = {"full": row("Full", 45.9), "ablation": row("Ablation", 46.0)}
  assert runner.notes(spec, single)[0].endswith("(the paper has it higher), by 0.10.")
  assert len(runner.notes(spec, single)) == 2
  for name, published in (("full", 55.12), ("ablation", 50.2)):
    single[name]["compared_with"] = [{"label": "paper", "published": {"hr_at_20": published}}]
  assert runner.notes(spec, single)[0].endswith("(the paper has it higher by 4.92), by 0.10.")
  # A refitted row and one whose refit is unfinished: both compared before the refit.
  refitted = {"full": {**row("Full", 54.3, 54.4), "honest_is_refit": True,
                       "selected": row("", 50.2, 50.3)["honest"]},
              "ablation": {**row("Ablation", 50.35), "honest_is_refit": False,
                           "selected": row("", 50.35)["honest"]}}
  assert runner.notes(spec, refitted)[0].startswith(
      "Disagrees with the paper (selected epochs before the refit: a refit is unfinished): Full "
      "HR@20 50.25 < Ablation 50.35")


def test_speeds_are_compared_only_on_one_cpu():
  """Two runs' examples/s give a ratio only when their epochs trained on one CPU (named)."""
  from benchmarks import reproduce  # pylint: disable=g-import-not-at-top

  def run(examples_per_second, cpu):
    return {"examples_per_second": examples_per_second, "load_average_max": 2.0, "cpu": cpu}

  assert reproduce._speed_text(run(1500.0, "Xeon"), run(1000.0, "Xeon")) == (
      "Training speed 1.50x the default's (examples/s of the two runs; machine load at their "
      "epochs' ends 2.0 and 2.0; CPU Xeon).")
  assert reproduce._speed_text(run(1500.0, "Xeon"), run(1000.0, "EPYC")) == (
      "Training speed not compared: the runs trained on different CPUs (Xeon; EPYC).")
  assert reproduce._speed_text(run(1500.0, None), run(1000.0, "EPYC")) == (
      "Training speed not compared: a run's CPU is not recorded.")


def test_options_are_judged_against_the_seed_spread_of_the_default():
  """An option ahead on both metrics is called ahead by more than the default's spread over
  seeds only when both differences exceed its standard deviation; one ahead on a single metric
  is not called better."""
  from benchmarks import reproduce  # pylint: disable=g-import-not-at-top
  metrics = ("hr_at_20", "mrr_at_20")

  def result(label, hr, mrr):
    valid = {m: reproduce.mean_std(values) for m, values in zip(metrics, (hr, mrr))}
    return {"label": label, "valid": valid,
            "runs": [{"examples_per_second": 1000.0, "load_average_max": 1.0}]}

  results = {"base": result("Default", [51.32, 51.84], [25.97, 26.17]),
             "small": result("Small lead", [51.70], [26.10]),
             "large": result("Large lead", [52.50], [26.50]),
             "mixed": result("Mixed", [51.82], [26.01]),
             "worse": result("Worse", [51.00], [25.70])}
  lines = dict(zip(["small", "large", "mixed", "worse"],
                   reproduce.against_baseline(results, "base", metrics)))
  assert ("better than Default on validation, but not on every metric by more than the standard "
          "deviation over its 2 seeds (HR@20 0.37, MRR@20 0.14)") in lines["small"]
  assert "better than Default on validation, by more than the standard deviation" in lines["large"]
  assert "not better than Default on every metric, and no metric more than 0.2" in lines["mixed"]
  assert "HR@20 +0.24, MRR@20 -0.06" in lines["mixed"]
  assert "worse than Default on validation by more than 0.2 points" in lines["worse"]
