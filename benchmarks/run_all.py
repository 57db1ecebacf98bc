r"""`make bench`: runs every benchmark, then renders results/BENCHMARKS.md from benchmarks.json.

    python -m benchmarks.run_all [--only=input_pipeline,train_step] [--render_only]
        [--run_dir=runs/gowalla-attenmixer]

Each benchmark is its own process (they set TensorFlow options at start-up) and records its
figures with the command, date, CPU model and thread count (`benchmarks.common.record`).
"""

import json
import os
import subprocess
import sys

from absl import app
from absl import flags

from benchmarks import common
from data.atomic import atomic_output

FLAGS = flags.FLAGS
flags.DEFINE_list("only", [], "Run only these benchmarks (input_pipeline, train_step, "
                  "train_step_diginetica, threads, "
                  "encoder_cost, evaluation, epoch, epoch_runs, index_scale, serving, soak).")
flags.DEFINE_bool("render_only", False, "Only render BENCHMARKS.md from benchmarks.json.")
flags.DEFINE_string("run_dir", "runs/gowalla-attenmixer", "A trained Gowalla run folder (that of "
                    "`make train`, or runs/gowalla-attenmixer-full of benchmarks.full_run) for "
                    "the index_scale, serving and soak benchmarks.")


# The one-epoch runs of results/reproduction/options.md that `make bench` measures (issue 6).
EPOCH_ROWS = ("gowalla-attenmixer", "gowalla-attenmixer-table_dropout0.0",
              "gowalla-attenmixer-batch_size512-learning_rate0.002263")


def benchmarks(run_dir: str):
  """name -> module arguments. Each records entry `name` in results/benchmarks.json, except
  `epoch_runs` (results/reproduction/options.md) and `index_scale` (results/serving_index_recall.md),
  whose tables BENCHMARKS.md links to."""
  return {
      "input_pipeline": ["benchmarks.input_pipeline", "--dataset=gowalla"],
      "train_step": ["benchmarks.train_step", "--dataset=gowalla",
                     "--batch_sizes=100,256,512,1024",
                     "--variants=default,table_dropout=0,mixed_precision=bfloat16", "--steps=10",
                     "--repetitions=3"],
      "train_step_diginetica": ["benchmarks.train_step", "--dataset=diginetica_srgnn",
                                "--batch_sizes=100,512",
                                "--variants=default,mixed_precision=bfloat16", "--steps=10",
                                "--repetitions=3", "--record_as=train_step_diginetica"],
      # One process per intra_op:inter_op thread setting (~6 min).
      "threads": ["benchmarks.threads", "--dataset=gowalla", "--batch_sizes=100", "--steps=10",
                  "--repetitions=3"],
      # The paper's Table 2 Time column, as ratios: GNN encoders and readouts against Atten-Mixer.
      "encoder_cost": ["benchmarks.train_step", "--dataset=gowalla", "--batch_sizes=100",
                       "--record_as=encoder_cost", "--variants=default,variant=srgnn,"
                       "variant=srgnn_am,variant=sgnnhn,variant=sgnnhn_am", "--steps=10",
                       "--repetitions=3"],
      "evaluation": ["benchmarks.evaluation", "--dataset=gowalla",
                     "--eval_batch_sizes=500,2000"],
      # A whole trainer epoch (input, steps, checkpoints, progress bar, evaluation) beside the
      # step benchmark's speed, in one process (~8 min per precision).
      "epoch": ["benchmarks.train_epoch", "--dataset=gowalla", "--precisions=float32,bfloat16"],
      # One-epoch Gowalla runs (batch 100, batch 512, no table dropout): minutes per epoch,
      # examples/s, peak memory and accuracy, in results/reproduction/options.md. Finished runs
      # are kept (remove runs/reproduction/short/<row> to measure one again); ~1 h on 2 cores.
      "epoch_runs": ["benchmarks.reproduce", "--table=options", "--protocol=short",
                     f"--rows={','.join(EPOCH_ROWS)}"],
      # These three need a trained Gowalla run (--run_dir).
      "index_scale": ["benchmarks.index_scale", f"--run_dir={run_dir}"],
      "serving": ["benchmarks.serving", f"--run_dir={run_dir}"],
      # 32 clients, 60 s timed, memory after 10,000 and 100,000 requests (~10 min on 2 cores).
      "soak": ["benchmarks.soak", f"--export={run_dir}/export/attenmixer"],
  }

BENCHMARKS_MD = os.path.join(common.RESULTS_DIR, "BENCHMARKS.md")


def _format(value) -> str:
  if isinstance(value, float):
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
  return str(value)


def effects(rows) -> list:
  """Bullet lines comparing, per batch size, each variant's step and each measured alternative
  of the default step (`benchmarks.train_step` rows) with the default, as ratios."""
  lines = []
  defaults = {r["batch_size"]: r for r in rows if r.get("variant") == "default"}
  for r in rows:
    default = defaults.get(r.get("batch_size"))
    if default is None or "step_ms" not in r:
      continue
    batch = f"batch {r['batch_size']}"
    if r is not default:
      step, ratio = r["step_ms"] / default["step_ms"], r["ratio"] / default["ratio"]
      lines.append(f"- `{r['variant']}`, {batch}: step {r['step_ms']:.1f} ms against the "
                   f"default's {default['step_ms']:.1f} ms ({step:.2f}x); to their floors (timed "
                   f"beside each, so machine noise cancels) {r['ratio']:.2f} against "
                   f"{default['ratio']:.2f} ({ratio:.2f}x)")
      continue
    if "step_cached_input_ms" in r:
      lines.append(f"- input pipeline, {batch}: the step fed one cached batch "
                   f"{r['step_cached_input_ms']:.1f} ms against {r['step_ms']:.1f} ms from the "
                   f"pipeline ({r['step_cached_input_ms'] / r['step_ms']:.2f}x)")
  return lines


def step_parts(r) -> tuple:
  """(products floor ms, update floor ms, [(part, ms beyond its floor)]) of a default
  `benchmarks.train_step` row with parts, each part timed alone on one fixed batch."""
  products = min(r["floor_products_native_ms"], r["floor_products_xla_ms"])
  update = min(r["floor_update_native_ms"], r["floor_update_xla_ms"])
  named = [
      ("the query tower's forward and backward (encoder, Atten-Mixer readout, projection)",
       "step_query_tower_ms"),
      ("the table's dropout, normalisation and cast before the products (candidate_rows)",
       "step_candidate_rows_ms"),
      ("the table's gradient back through them, with the sparse rows (table_gradient)",
       "step_table_gradient_ms"),
  ]
  parts = [(name, r[key]) for name, key in named]
  parts += [
      ("the softmax beside the floor's products (softmax_products)",
       r["step_softmax_products_ms"] - products),
      ("the optimizer over all variables beside the floor's update of the table",
       r["step_update_ms"] - update),
  ]
  timed = sum(r[key] for _, key in named) + r["step_softmax_products_ms"] + r["step_update_ms"]
  parts.append(("the rest: the step on a real batch against its parts on one fixed batch "
                "(tape, input, dispatch)", r["step_ms"] - timed))
  return products, update, parts


def _has_parts(r) -> bool:
  return r.get("variant") == "default" and "step_softmax_products_ms" in r


def breakdown(rows) -> list:
  """Bullet lines splitting each default training step's time beyond its floor into the step's
  parts (`benchmarks.train_step` rows with parts), each part's excess over its own floor."""
  lines = []
  for r in filter(_has_parts, rows):
    products, update, parts = step_parts(r)
    lines.append(f"- batch {r['batch_size']}: step {r['step_ms']:.1f} ms = floor "
                 f"{r['floor_ms']:.1f} ms (products {products:.1f}, update {update:.1f}) + "
                 f"{r['step_ms'] - r['floor_ms']:.1f} ms:")
    lines += [f"  - {name}: {value:.1f} ms" for name, value in parts]
  return lines


# Issue 26: the step's ratio to its floor at each batch size, per precision.
STEP_LIMITS = {100: 1.5, 512: 1.25}
TOWER_LIMIT = 1.3
DROPOUT_LIMIT = 1.1
EPOCH_LIMIT, EVAL_LIMIT = 0.9, 0.10


def training_targets(everything, entry: str = "train_step", dataset: str = "") -> list:
  """(target, measured, met, where the time goes) of issue 26 from a `train_step` entry (and,
  for Gowalla, the `epoch` entry); `dataset` prefixes the targets' names."""
  rows = []
  steps = {(r["variant"], r["batch_size"]): r for r in _results(everything, entry)}
  bf16 = "mixed_precision=bfloat16"
  for batch, limit in STEP_LIMITS.items():
    for variant, label in (("default", "float32"), (bf16, "bfloat16")):
      step = steps.get((variant, batch))
      if step is None:
        continue
      why = ""
      if _has_parts(step):
        largest = sorted(step_parts(step)[2], key=lambda part: -part[1])[:2]
        why = (f"{step['step_ms'] - step['floor_ms']:.0f} ms beyond the floor's "
               f"{step['floor_ms']:.0f} ms, most in " +
               "; ".join(f"{name.split(' (')[0]} {value:.0f} ms" for name, value in largest))
      elif variant == bf16 and ("default", batch) in steps:
        why = (f"{step['step_ms'] - step['floor_ms']:.0f} ms beyond the floor; the float32 "
               "split above applies, with faster products")
      rows.append((f"{dataset}{label} step, batch {batch}: <= {limit}x its floor",
                   f"{step['ratio']:.2f}x ({step['step_ms']:.1f} ms against "
                   f"{step['floor_ms']:.1f} ms)", step["ratio"] <= limit, why))
      if batch == 100 and "tower_floor_ms" in step:  # the alternative at batch 100
        floor = step["floor_ms"] + step["tower_floor_ms"]
        rows.append((f"{dataset}{label} step, batch {batch}: <= {TOWER_LIMIT}x the floor plus "
                     "the query tower's own products",
                     f"{step['ratio_with_tower']:.2f}x ({step['step_ms']:.1f} ms against "
                     f"{floor:.1f} ms)", step["ratio_with_tower"] <= TOWER_LIMIT,
                     "the tower's forward and backward beyond its products (XLA runs the "
                     "per-session attention products as many small dots), see the split"))
    fp32, half = steps.get(("default", batch)), steps.get((bf16, batch))
    if fp32 and half:
      rows.append((f"{dataset}bfloat16 step faster than float32, batch {batch}",
                   f"{half['step_ms']:.1f} against {fp32['step_ms']:.1f} ms "
                   f"({half['step_ms'] / fp32['step_ms']:.2f}x)",
                   half["step_ms"] < fp32["step_ms"], ""))
    without = steps.get(("table_dropout=0", batch))
    if fp32 and without:
      ratio = fp32["step_ms"] / without["step_ms"]
      rows.append((f"table dropout, batch {batch}: step <= {DROPOUT_LIMIT}x the step without it",
                   f"{ratio:.2f}x ({fp32['step_ms']:.1f} against {without['step_ms']:.1f} ms)",
                   ratio <= DROPOUT_LIMIT, ""))
  for epoch in _results(everything, "epoch") if entry == "train_step" else []:
    label = f"{epoch['precision']}, batch {epoch['batch_size']}"
    rows.append((f"trainer epoch, {label}: >= {EPOCH_LIMIT}x the step's examples/s",
                 f"{epoch['epoch_over_step']:.2f}x ({epoch['epoch_examples_per_second']:,.0f} "
                 f"against {epoch['step_examples_per_second']:,.0f} examples/s)",
                 epoch["epoch_over_step"] >= EPOCH_LIMIT,
                 "the rest is the input pipeline, checkpoints and the progress bar on the same "
                 "2 cores"))
    rows.append((f"evaluation of valid and test, {label}: <= {EVAL_LIMIT:.0%} of the epoch",
                 f"{epoch['eval_over_epoch']:.0%} ({epoch['eval_seconds']:.0f} s against "
                 f"{epoch['epoch_seconds']:.0f} s)", epoch["eval_over_epoch"] <= EVAL_LIMIT,
                 "full-catalogue scoring of every prefix, float32"))
  return rows


def _results(everything, name) -> list:
  results = everything.get(name, {}).get("results", [])
  return results if isinstance(results, list) else [results]


def targets(everything) -> list:
  """Table lines: the training targets of issue 26 and the evaluation and serving targets of
  issue 6, the measured figure, met or not, and for a missed target what the measurements say
  the time is spent on."""
  rows = (training_targets(everything) +
          training_targets(everything, "train_step_diginetica", "Diginetica: "))
  evaluations = [r for r in _results(everything, "evaluation") if r.get("split") == "test"]
  if evaluations:
    best = min(evaluations, key=lambda r: r["seconds"])
    rows.append(("evaluation of the Gowalla test split: < 60 s within 4 GB",
                 f"{best['seconds']:.1f} s, {best['peak_rss_gb']:.2f} GB (batch "
                 f"{best['eval_batch_size']})",
                 best["seconds"] < 60 and best["peak_rss_gb"] < 4, ""))
  serving = [r for r in _results(everything, "serving") if r.get("batch_size") == 1]
  cores = everything.get("serving", {}).get("environment", {}).get("threads", 2)
  brute = [r for r in serving if r["index"] == "brute_force"]
  if brute:
    call = brute[0]
    rows.append(("in process, brute force, batch 1: < 1 ms",
                 f"{call['in_process_p50_ms']:.2f} ms", call["in_process_p50_ms"] < 1,
                 f"the exact search alone (score product and top-k, float32) takes "
                 f"{call['brute_force_floor_p50_ms']:.2f} ms; the query tower "
                 f"{call['in_process_embedding_p50_ms']:.2f} ms"))
  clients, p50_limit = 8, 3.0
  eight = [r for r in serving if r["clients"] == clients]
  if eight:
    best = min(eight, key=lambda r: r["p50_ms"])
    label = f"{best['index']}, batching {best['batching']}"
    needed = clients / p50_limit * 1e3  # requests/s at which waiting clients see the limit
    rows.append((f"gRPC, {clients} clients, batch 1: p50 < {p50_limit:g} ms, p99 < 15 ms",
                 f"p50 {best['p50_ms']:.1f} ms, p99 {best['p99_ms']:.1f} ms ({label})",
                 best["p50_ms"] < p50_limit and best["p99_ms"] < 15,
                 f"{clients} clients that each wait for their answer see a latency of {clients} "
                 f"/ throughput ({clients} / {best['requests_per_second']:,.0f} requests/s = "
                 f"{clients * 1e3 / best['requests_per_second']:.1f} ms); a p50 of "
                 f"{p50_limit:g} ms needs {needed:,.0f} requests/s, {cores * 1e3 / needed:.2f} "
                 f"ms of the {cores} cores per request, clients included, and the in-process "
                 f"call alone takes {best['in_process_p50_ms']:.2f} ms"))
  if serving:
    best = max(serving, key=lambda r: r["requests_per_second"])
    rows.append(("gRPC, batch 1: >= 1,000 requests/s",
                 f"{best['requests_per_second']:,.0f} requests/s ({best['index']}, batching "
                 f"{best['batching']}, {best['clients']} clients)",
                 best["requests_per_second"] >= 1000,
                 f"at {best['in_process_p50_ms']:.2f} ms per call in process the server's "
                 f"{cores} cores do at most {cores * 1e3 / best['in_process_p50_ms']:,.0f} "
                 f"calls/s, before "
                 f"gRPC and the clients' own work on the same cores"))
  if not rows:
    return []
  return ["| target | measured | met | where the time goes |", "|---|---|---|---|",
          *[f"| {target} | {measured} | {'yes' if met else 'no'} | {why if not met else ''} |"
            for target, measured, met, why in rows]]


def throughput(rows) -> list:
  """Table lines: examples/s of the step and of its floor at each batch size, per variant."""
  variants = list(dict.fromkeys(r["variant"] for r in rows))
  batches = sorted({r["batch_size"] for r in rows})
  by_key = {(r["variant"], r["batch_size"]): r for r in rows}
  lines = ["| batch | " + " | ".join(f"{v}: examples/s (floor's), ratio" for v in variants) +
           " |", "|---|" + "---|" * len(variants)]
  for batch in batches:
    cells = []
    for variant in variants:
      r = by_key.get((variant, batch))
      cells.append("" if r is None else
                   f"{r['examples_per_second']:,.0f} ({r['floor_examples_per_second']:,.0f}), "
                   f"{r['ratio']:.2f}x")
    lines.append(f"| {batch} | " + " | ".join(cells) + " |")
  return lines


def render(everything) -> str:
  lines = ["# Benchmarks", "",
           "Written by `make bench` (`python -m benchmarks.run_all`) from `benchmarks.json`. "
           "Speed comparisons are ratios of two things measured in the same process.", ""]
  goals = targets(everything)
  if goals:
    lines += ["## Targets", "", *goals, ""]
  for name, entry in everything.items():
    env = entry["environment"]
    features = env.get("cpu_bf16_features")
    cpu = env["cpu"] + ("" if features is None else
                        f" (bfloat16 features: {', '.join(features) or 'none'})")
    lines += [f"## {name}", "",
              f"`{env['command']}` on {env['date']}, CPU {cpu}, {env['threads']} threads, "
              f"load average {env['load_average_1min']:.1f} at the end.", ""]
    if name.startswith("train_step"):
      lines += [*throughput(entry["results"]), ""]
    rows = entry["results"] if isinstance(entry["results"], list) else [entry["results"]]
    keys = list(dict.fromkeys(k for row in rows for k, v in row.items()
                              if not isinstance(v, (list, dict))))
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
      lines.append("| " + " | ".join(_format(row[k]) if k in row else "" for k in keys) + " |")
    lines.append("")
    comparisons = effects(rows)
    if comparisons:
      lines += ["Same process, as ratios to the default:", "", *comparisons, ""]
    parts = breakdown(rows)
    if parts:
      lines += ["Where the default step's time beyond the floor goes (each part timed alone, "
                "on one fixed batch, in the same process; the query tower has no floor of its "
                "own):", "", *parts, ""]
  options = os.path.join(common.RESULTS_DIR, "reproduction", "options.md")
  if os.path.isfile(options):
    lines += ["## Epoch time and accuracy", "", "See [reproduction/options.md]"
              "(reproduction/options.md) (one-epoch runs: minutes, examples/s, peak memory, "
              "validation and test accuracy of each setting).", ""]
  recall = os.path.join(common.RESULTS_DIR, "serving_index_recall.md")
  if os.path.isfile(recall):
    lines += ["## Top-K indexes", "", "See [serving_index_recall.md](serving_index_recall.md) "
              "(`python -m benchmarks.index_scale`).", ""]
  return "\n".join(lines)


def main(argv):
  del argv
  if not FLAGS.render_only:
    for name, command in benchmarks(FLAGS.run_dir).items():
      if FLAGS.only and name not in FLAGS.only:
        continue
      print(f"== {name}: python -m {' '.join(command)}", flush=True)
      if subprocess.run([sys.executable, "-m", *command]).returncode != 0:
        print(f"benchmark {name} failed", file=sys.stderr)
        return 1
  with open(common.BENCHMARKS_FILE) as results:
    everything = json.load(results)
  with atomic_output(BENCHMARKS_MD) as temporary:
    with open(temporary, "w") as out:
      out.write(render(everything))
  print(f"wrote {BENCHMARKS_MD}")
  return 0


if __name__ == "__main__":
  app.run(main)
