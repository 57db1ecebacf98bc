r"""`make bench`: runs every benchmark, then renders results/BENCHMARKS.md from benchmarks.json.

    python -m benchmarks.run_all [--only=input_pipeline,train_step] [--render_only]
        [--run_dir=runs/gowalla-attenmixer]

Each benchmark is its own process (they set TensorFlow options at start-up) and records its
figures with the command, date, CPU model and thread count (`benchmarks.common.record`).
"""

import dataclasses
import json
import os
import subprocess
import sys
from typing import Dict, List, NamedTuple, Optional, Tuple

from absl import app
from absl import flags

from benchmarks import common
from data.atomic import atomic_output

FLAGS = flags.FLAGS
flags.DEFINE_list("only", [], "Run only these benchmarks (input_pipeline, train_step, "
                  "train_step_diginetica, train_step_length_multiple, threads, "
                  "encoder_cost, evaluation, epoch, epoch_runs, events_import, index_scale, "
                  "serving, soak).")
flags.DEFINE_bool("render_only", False, "Only render BENCHMARKS.md from benchmarks.json.")
flags.DEFINE_string("run_dir", "runs/gowalla-attenmixer", "A trained Gowalla run folder (that of "
                    "`make train`, or runs/gowalla-attenmixer-full of benchmarks.full_run) for "
                    "the index_scale, serving and soak benchmarks.")


# The one-epoch runs of results/reproduction/options.md that `make bench` measures (issue 6).
EPOCH_ROWS = ("gowalla-attenmixer", "gowalla-attenmixer-table_dropout0.0",
              "gowalla-attenmixer-batch_size512-learning_rate0.002263")


def benchmarks(run_dir: str):
  """name -> module arguments. Each records entry `name` in results/benchmarks.json (and
  `events_import` also `events_readers` and `events_beam`), except `epoch_runs`
  (results/reproduction/options.md) and `index_scale` (results/serving_index_recall.md), whose
  tables BENCHMARKS.md links to."""
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
      # What cutting batches to their longest session (--length_multiple) saves, side by side.
      "train_step_length_multiple": ["benchmarks.train_step", "--dataset=gowalla",
                                     "--batch_sizes=100,512",
                                     "--variants=default,length_multiple=0", "--steps=10",
                                     "--repetitions=5", "--noparts",
                                     "--record_as=train_step_length_multiple"],
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
      # The event-log importer on a generated 50-million-event CSV (gzip) log, the chunked
      # CSV readers it was chosen between, and the Beam pipeline against it on 2 million events
      # (~17 min on 2 cores; 2.5 GB in --work_dir).
      "events_import": ["benchmarks.events_import", "--events=50000000"],
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


@dataclasses.dataclass(frozen=True)
class Effect:
  """One step compared with the default step at the same batch size (a line of `effects`).

  Attributes:
    batch_size: the batch size of both steps.
    variant: the compared variant of `benchmarks.train_step`, or None for the default step fed
      one cached batch (`step_cached_input_ms`) instead of the input pipeline.
    step_ms: the compared step.
    default_step_ms: the default step, fed by the input pipeline.
    step_over_default: `step_ms / default_step_ms`.
    ratio: the compared step's ratio to the floor timed beside it (None for the cached batch).
    default_ratio: the default step's ratio to its floor (None for the cached batch).
    ratio_over_default: `ratio / default_ratio`, which cancels machine noise (None for the
      cached batch).
  """
  batch_size: int
  variant: Optional[str]
  step_ms: float
  default_step_ms: float
  step_over_default: float
  ratio: Optional[float] = None
  default_ratio: Optional[float] = None
  ratio_over_default: Optional[float] = None


def compare_with_default(rows) -> List[Effect]:
  """Per `benchmarks.train_step` row with a default row at its batch size: each other variant's
  step, and the default's step fed one cached batch, against the default step, in row order."""
  compared = []
  defaults = {r["batch_size"]: r for r in rows if r.get("variant") == "default"}
  for r in rows:
    default = defaults.get(r.get("batch_size"))
    if default is None or "step_ms" not in r:
      continue
    if r is not default:
      compared.append(Effect(
          batch_size=r["batch_size"], variant=r["variant"], step_ms=r["step_ms"],
          default_step_ms=default["step_ms"], step_over_default=r["step_ms"] / default["step_ms"],
          ratio=r["ratio"], default_ratio=default["ratio"],
          ratio_over_default=r["ratio"] / default["ratio"]))
    elif "step_cached_input_ms" in r:
      compared.append(Effect(
          batch_size=r["batch_size"], variant=None, step_ms=r["step_cached_input_ms"],
          default_step_ms=r["step_ms"], step_over_default=r["step_cached_input_ms"] / r["step_ms"]))
  return compared


def effects(rows) -> list:
  """Bullet lines of `compare_with_default(rows)`: each comparison as a ratio."""
  lines = []
  for e in compare_with_default(rows):
    batch = f"batch {e.batch_size}"
    if e.variant is None:
      lines.append(f"- input pipeline, {batch}: the step fed one cached batch "
                   f"{e.step_ms:.1f} ms against {e.default_step_ms:.1f} ms from the "
                   f"pipeline ({e.step_over_default:.2f}x)")
    else:
      lines.append(f"- `{e.variant}`, {batch}: step {e.step_ms:.1f} ms against the "
                   f"default's {e.default_step_ms:.1f} ms ({e.step_over_default:.2f}x); to their "
                   f"floors (timed beside each, so machine noise cancels) {e.ratio:.2f} against "
                   f"{e.default_ratio:.2f} ({e.ratio_over_default:.2f}x)")
  return lines


class Part(NamedTuple):
  """One part of the training step: `ms` beyond its own floor, named by `key` and `description`."""
  key: str
  description: str
  ms: float


def step_parts(r) -> Tuple[float, float, List[Part]]:
  """(products floor ms, update floor ms, parts) of a default `benchmarks.train_step` row with
  parts, each part timed alone on one fixed batch. The parts, in this order: query_tower,
  candidate_rows, table_gradient (each whole, having no floor of its own), softmax_products
  (beyond the products floor), update (beyond the update floor) and rest (the step on a real
  batch beyond the sum of its timed parts); they sum to the step beyond its floor when the floor
  is the products floor plus the update floor."""
  products = min(r["floor_products_native_ms"], r["floor_products_xla_ms"])
  update = min(r["floor_update_native_ms"], r["floor_update_xla_ms"])
  named = [
      ("query_tower", "the query tower's forward and backward (encoder, Atten-Mixer readout, "
       "projection)"),
      ("candidate_rows", "the table's dropout, normalisation and cast before the products "
       "(candidate_rows)"),
      ("table_gradient", "the table's gradient back through them, with the sparse rows "
       "(table_gradient)"),
  ]
  parts = [Part(key, description, r[f"step_{key}_ms"]) for key, description in named]
  parts += [
      Part("softmax_products", "the softmax beside the floor's products (softmax_products)",
           r["step_softmax_products_ms"] - products),
      Part("update", "the optimizer over all variables beside the floor's update of the table",
           r["step_update_ms"] - update),
  ]
  timed = (sum(r[f"step_{key}_ms"] for key, _ in named) + r["step_softmax_products_ms"] +
           r["step_update_ms"])
  parts.append(Part("rest", "the rest: the step on a real batch against its parts on one fixed "
                    "batch (tape, input, dispatch)", r["step_ms"] - timed))
  return products, update, parts


def reachable_ms(r) -> Optional[float]:
  """The least time a default `benchmarks.train_step` row's step could take without changing
  the products, the passes over the table or the update: its timed parts (`step_parts`) with the
  query tower at its own products' floor (`tower_floor_ms`) and no rest; None without a split
  or a tower floor."""
  if not _has_parts(r) or "tower_floor_ms" not in r:
    return None
  return (r["step_softmax_products_ms"] + r["step_candidate_rows_ms"] +
          r["step_table_gradient_ms"] + r["step_update_ms"] + r["tower_floor_ms"])


def _has_parts(r) -> bool:
  return r.get("variant") == "default" and "step_softmax_products_ms" in r


def breakdown(rows) -> list:
  """Bullet lines splitting each default training step's time beyond its floor into the step's
  parts (`step_parts` of the `benchmarks.train_step` rows with parts)."""
  lines = []
  for r in filter(_has_parts, rows):
    products, update, parts = step_parts(r)
    lines.append(f"- batch {r['batch_size']}: step {r['step_ms']:.1f} ms = floor "
                 f"{r['floor_ms']:.1f} ms (products {products:.1f}, update {update:.1f}) + "
                 f"{r['step_ms'] - r['floor_ms']:.1f} ms:")
    lines += [f"  - {part.description}: {part.ms:.1f} ms" for part in parts]
  return lines


# Issue 26: the step's ratio to its floor at each batch size, per precision.
STEP_LIMITS = {100: 1.5, 512: 1.25}
TOWER_LIMIT = 1.3
DROPOUT_LIMIT = 1.1
EPOCH_LIMIT, EVAL_LIMIT = 0.9, 0.10
# Issue 6: evaluation of the Gowalla test split, and serving at batch 1.
EVAL_SECONDS_LIMIT, EVAL_MEMORY_LIMIT_GB = 60, 4
IN_PROCESS_LIMIT_MS = 1
LATENCY_CLIENTS, P50_LIMIT_MS, P99_LIMIT_MS = 8, 3.0, 15
THROUGHPUT_LIMIT = 1000


@dataclasses.dataclass(frozen=True)
class Target:
  """A target of issue 26 or issue 6 judged from the measurements: one row of the targets table.

  Attributes:
    key: what the target is, independent of its wording: "/"-separated, the results entry it
      is judged from, then the kind of target and what it applies to (e.g.
      "train_step/step_over_floor/float32/100", "serving/grpc_throughput").
    name: the target in words.
    met: whether the measurement meets the target.
    figures: the numbers `met` is decided from (the measured ratio or time, its limit, and the
      figures `measured` and `why` state), by name.
    measured: the measurement in words.
    why: for the table's "where the time goes" column (shown only when the target is missed).
    row: the results row the target is judged from, when it is chosen among several rows (the
      fastest evaluation, the best serving row).
    causes: for a step with a measured split: the keys of its two largest parts (`step_parts`)
      beyond their floors, largest first, which `why` names.
  """
  key: str
  name: str
  met: bool
  figures: Dict[str, float]
  measured: str
  why: str = ""
  row: Optional[dict] = None
  causes: Tuple[str, ...] = ()


def training_targets(everything, entry: str = "train_step", dataset: str = "") -> List[Target]:
  """Issue 26's targets from a `train_step` entry (and, for entry "train_step", the `epoch`
  entry); `dataset` prefixes the targets' names."""
  judged = []
  steps = {(r["variant"], r["batch_size"]): r for r in _results(everything, entry)}
  bf16 = "mixed_precision=bfloat16"
  for batch, limit in STEP_LIMITS.items():
    for variant, label in (("default", "float32"), (bf16, "bfloat16")):
      step = steps.get((variant, batch))
      if step is None:
        continue
      why, causes, figures = "", (), {}
      beyond = step["step_ms"] - step["floor_ms"]
      if _has_parts(step):
        largest = sorted(step_parts(step)[2], key=lambda part: -part.ms)[:2]
        causes = tuple(part.key for part in largest)
        why = (f"{beyond:.0f} ms beyond the floor's {step['floor_ms']:.0f} ms, most in " +
               "; ".join(f"{part.description.split(' (')[0]} {part.ms:.0f} ms"
                         for part in largest))
        reach = reachable_ms(step)
        if reach is not None:
          figures["reachable_ratio"] = reach / step["floor_ms"]
          if reach > limit * step["floor_ms"]:
            why += (f". Out of reach with this floor: the step's parts with the tower at its "
                    f"own products' time and nothing else beside them take {reach:.0f} ms, "
                    f"{reach / step['floor_ms']:.2f}x the floor")
      elif variant == bf16 and ("default", batch) in steps:
        why = (f"{beyond:.0f} ms beyond the floor; the float32 split above applies, with "
               "faster products")
      judged.append(Target(
          key=f"{entry}/step_over_floor/{label}/{batch}",
          name=f"{dataset}{label} step, batch {batch}: <= {limit}x its floor",
          met=step["ratio"] <= limit,
          figures={"ratio": step["ratio"], "limit": limit, "step_ms": step["step_ms"],
                   "floor_ms": step["floor_ms"], **figures},
          measured=(f"{step['ratio']:.2f}x ({step['step_ms']:.1f} ms against "
                    f"{step['floor_ms']:.1f} ms)"),
          why=why, causes=causes))
      if batch == 100 and "tower_floor_ms" in step:  # the alternative at batch 100
        floor = step["floor_ms"] + step["tower_floor_ms"]
        judged.append(Target(
            key=f"{entry}/step_over_floor_and_tower/{label}/{batch}",
            name=(f"{dataset}{label} step, batch {batch}: <= {TOWER_LIMIT}x the floor plus the "
                  "query tower's own products"),
            met=step["ratio_with_tower"] <= TOWER_LIMIT,
            figures={"ratio": step["ratio_with_tower"], "limit": TOWER_LIMIT,
                     "step_ms": step["step_ms"], "floor_ms": floor},
            measured=(f"{step['ratio_with_tower']:.2f}x ({step['step_ms']:.1f} ms against "
                      f"{floor:.1f} ms)"),
            why=("the tower's forward and backward beyond its products (XLA runs the "
                 "per-session attention products as many small dots), see the split")))
    fp32, half = steps.get(("default", batch)), steps.get((bf16, batch))
    if fp32 and half:
      ratio = half["step_ms"] / fp32["step_ms"]
      judged.append(Target(
          key=f"{entry}/bfloat16_over_float32/{batch}",
          name=f"{dataset}bfloat16 step faster than float32, batch {batch}",
          met=half["step_ms"] < fp32["step_ms"],
          figures={"ratio": ratio, "step_ms": half["step_ms"],
                   "float32_step_ms": fp32["step_ms"]},
          measured=f"{half['step_ms']:.1f} against {fp32['step_ms']:.1f} ms ({ratio:.2f}x)"))
    without = steps.get(("table_dropout=0", batch))
    if fp32 and without:
      ratio = fp32["step_ms"] / without["step_ms"]
      judged.append(Target(
          key=f"{entry}/dropout_over_none/{batch}",
          name=(f"{dataset}table dropout, batch {batch}: step <= {DROPOUT_LIMIT}x the step "
                "without it"),
          met=ratio <= DROPOUT_LIMIT,
          figures={"ratio": ratio, "limit": DROPOUT_LIMIT, "step_ms": fp32["step_ms"],
                   "without_ms": without["step_ms"]},
          measured=f"{ratio:.2f}x ({fp32['step_ms']:.1f} against {without['step_ms']:.1f} ms)"))
  for epoch in _results(everything, "epoch") if entry == "train_step" else []:
    label = f"{epoch['precision']}, batch {epoch['batch_size']}"
    which = f"{epoch['precision']}/{epoch['batch_size']}"
    judged.append(Target(
        key=f"epoch/epoch_over_step/{which}",
        name=f"trainer epoch, {label}: >= {EPOCH_LIMIT}x the step's examples/s",
        met=epoch["epoch_over_step"] >= EPOCH_LIMIT,
        figures={"ratio": epoch["epoch_over_step"], "limit": EPOCH_LIMIT},
        measured=(f"{epoch['epoch_over_step']:.2f}x ({epoch['epoch_examples_per_second']:,.0f} "
                  f"against {epoch['step_examples_per_second']:,.0f} examples/s)"),
        why=("the rest is the input pipeline, checkpoints and the progress bar on the same "
             "2 cores")))
    judged.append(Target(
        key=f"epoch/evaluation_share/{which}",
        name=f"evaluation of valid and test, {label}: <= {EVAL_LIMIT:.0%} of the epoch",
        met=epoch["eval_over_epoch"] <= EVAL_LIMIT,
        figures={"share": epoch["eval_over_epoch"], "limit": EVAL_LIMIT},
        measured=(f"{epoch['eval_over_epoch']:.0%} ({epoch['eval_seconds']:.0f} s against "
                  f"{epoch['epoch_seconds']:.0f} s)"),
        why="full-catalogue scoring of every prefix, float32"))
  return judged


def _results(everything, name) -> list:
  results = everything.get(name, {}).get("results", [])
  return results if isinstance(results, list) else [results]


def judge(everything) -> List[Target]:
  """The training targets of issue 26 (Gowalla, then Diginetica) and the evaluation and serving
  targets of issue 6 that `everything` (benchmarks.json) has measurements for, in table order."""
  judged = (training_targets(everything) +
            training_targets(everything, "train_step_diginetica", "Diginetica: "))
  evaluations = [r for r in _results(everything, "evaluation") if r.get("split") == "test"]
  if evaluations:
    best = min(evaluations, key=lambda r: r["seconds"])
    judged.append(Target(
        key="evaluation/test_split",
        name=(f"evaluation of the Gowalla test split: < {EVAL_SECONDS_LIMIT} s within "
              f"{EVAL_MEMORY_LIMIT_GB} GB"),
        met=best["seconds"] < EVAL_SECONDS_LIMIT and best["peak_rss_gb"] < EVAL_MEMORY_LIMIT_GB,
        figures={"seconds": best["seconds"], "seconds_limit": EVAL_SECONDS_LIMIT,
                 "peak_rss_gb": best["peak_rss_gb"], "memory_limit_gb": EVAL_MEMORY_LIMIT_GB},
        measured=(f"{best['seconds']:.1f} s, {best['peak_rss_gb']:.2f} GB (batch "
                  f"{best['eval_batch_size']})"),
        row=best))
  serving = [r for r in _results(everything, "serving") if r.get("batch_size") == 1]
  cores = everything.get("serving", {}).get("environment", {}).get("threads", 2)
  brute = [r for r in serving if r["index"] == "brute_force"]
  if brute:
    call = brute[0]
    judged.append(Target(
        key="serving/in_process/brute_force",
        name=f"in process, brute force, batch 1: < {IN_PROCESS_LIMIT_MS} ms",
        met=call["in_process_p50_ms"] < IN_PROCESS_LIMIT_MS,
        figures={"p50_ms": call["in_process_p50_ms"], "limit": IN_PROCESS_LIMIT_MS,
                 "search_p50_ms": call["brute_force_floor_p50_ms"],
                 "query_tower_p50_ms": call["in_process_embedding_p50_ms"]},
        measured=f"{call['in_process_p50_ms']:.2f} ms",
        why=(f"the exact search alone (score product and top-k, float32) takes "
             f"{call['brute_force_floor_p50_ms']:.2f} ms; the query tower "
             f"{call['in_process_embedding_p50_ms']:.2f} ms"),
        row=call))
  clients = LATENCY_CLIENTS
  eight = [r for r in serving if r["clients"] == clients]
  if eight:
    best = min(eight, key=lambda r: r["p50_ms"])
    label = f"{best['index']}, batching {best['batching']}"
    needed = clients / P50_LIMIT_MS * 1e3  # requests/s at which waiting clients see the limit
    waiting_ms = clients * 1e3 / best["requests_per_second"]  # Little's law
    judged.append(Target(
        key=f"serving/grpc_latency/{clients}_clients",
        name=(f"gRPC, {clients} clients, batch 1: p50 < {P50_LIMIT_MS:g} ms, p99 < "
              f"{P99_LIMIT_MS} ms"),
        met=best["p50_ms"] < P50_LIMIT_MS and best["p99_ms"] < P99_LIMIT_MS,
        figures={"p50_ms": best["p50_ms"], "p50_limit_ms": P50_LIMIT_MS,
                 "p99_ms": best["p99_ms"], "p99_limit_ms": P99_LIMIT_MS,
                 "requests_per_second": best["requests_per_second"],
                 "clients_over_throughput_ms": waiting_ms,
                 "needed_requests_per_second": needed,
                 "core_ms_per_request": cores * 1e3 / needed},
        measured=f"p50 {best['p50_ms']:.1f} ms, p99 {best['p99_ms']:.1f} ms ({label})",
        why=(f"{clients} clients that each wait for their answer see a latency of {clients} "
             f"/ throughput ({clients} / {best['requests_per_second']:,.0f} requests/s = "
             f"{waiting_ms:.1f} ms); a p50 of {P50_LIMIT_MS:g} ms needs {needed:,.0f} "
             f"requests/s, {cores * 1e3 / needed:.2f} ms of the {cores} cores per request, "
             f"clients included, and the in-process call alone takes "
             f"{best['in_process_p50_ms']:.2f} ms"),
        row=best))
  if serving:
    best = max(serving, key=lambda r: r["requests_per_second"])
    most = cores * 1e3 / best["in_process_p50_ms"]
    judged.append(Target(
        key="serving/grpc_throughput",
        name=f"gRPC, batch 1: >= {THROUGHPUT_LIMIT:,} requests/s",
        met=best["requests_per_second"] >= THROUGHPUT_LIMIT,
        figures={"requests_per_second": best["requests_per_second"],
                 "limit": THROUGHPUT_LIMIT, "most_calls_per_second": most},
        measured=(f"{best['requests_per_second']:,.0f} requests/s ({best['index']}, batching "
                  f"{best['batching']}, {best['clients']} clients)"),
        why=(f"at {best['in_process_p50_ms']:.2f} ms per call in process the server's "
             f"{cores} cores do at most {most:,.0f} calls/s, before gRPC and the clients' own "
             "work on the same cores"),
        row=best))
  return judged


def targets(everything) -> list:
  """Table lines of `judge(everything)`: each target, the measured figure, met or not, and for
  a missed target what the measurements say the time is spent on; [] without measurements."""
  judged = judge(everything)
  if not judged:
    return []
  return ["| target | measured | met | where the time goes |", "|---|---|---|---|",
          *[f"| {t.name} | {t.measured} | {'yes' if t.met else 'no'} | "
            f"{t.why if not t.met else ''} |" for t in judged]]


def throughput_grid(rows) -> Tuple[List[str], List[Tuple[int, List[Optional[dict]]]]]:
  """(variants in order of appearance, [(batch size, [each variant's row or None])] in
  increasing batch size) of `benchmarks.train_step` rows: the cells of `throughput`."""
  variants = list(dict.fromkeys(r["variant"] for r in rows))
  by_key = {(r["variant"], r["batch_size"]): r for r in rows}
  return variants, [(batch, [by_key.get((variant, batch)) for variant in variants])
                    for batch in sorted({r["batch_size"] for r in rows})]


def throughput(rows) -> list:
  """Table lines of `throughput_grid(rows)`: examples/s of the step and of its floor, and their
  ratio, one row per batch size and one column per variant."""
  variants, grid = throughput_grid(rows)
  lines = ["| batch | " + " | ".join(f"{v}: examples/s (floor's), ratio" for v in variants) +
           " |", "|---|" + "---|" * len(variants)]
  for batch, cells in grid:
    text = ["" if r is None else
            f"{r['examples_per_second']:,.0f} ({r['floor_examples_per_second']:,.0f}), "
            f"{r['ratio']:.2f}x" for r in cells]
    lines.append(f"| {batch} | " + " | ".join(text) + " |")
  return lines


def events_import_notes(everything) -> list:
  """Lines under the `events_import` table: the largest import against the smallest (the
  process before any data), the budget, the machine's load, and the readers' comparison."""
  rows = sorted(_results(everything, "events_import"), key=lambda r: r["events"])
  if len(rows) < 2:
    return []
  small, large = rows[0], rows[-1]
  cores = everything["events_import"]["environment"]["threads"]
  lines = [f"The importer took {large['seconds']:,.0f} s for {large['events']:,} events "
           f"({large['events_per_second']:,.0f} events/s; writing the "
           f"{large['sessions_written']:,} sessions' shards {large['write_seconds']:,.0f} s of "
           f"it) with a peak of {large['peak_rss_mb']:,.0f} MB; the same command on "
           f"{small['events']:,} events peaks at {small['peak_rss_mb']:,.0f} MB (the process "
           "before any data: TensorFlow, which writes the shards, and the libraries), so the "
           f"data took {large['peak_rss_mb'] - small['peak_rss_mb']:,.0f} MB of the default "
           "`--events_memory_mb=1024`. The load average was "
           f"{large['load_average_before']:.1f}-{large['load_average_after']:.1f} on {cores} "
           "cores" + (": other processes shared the machine, so the times are upper bounds."
                      if max(large["load_average_before"], large["load_average_after"]) >= cores
                      else ".")]
  readers = {r["library"]: r for r in _results(everything, "events_readers")}
  if {"pyarrow", "pandas"} <= set(readers):
    fast, slow = readers["pyarrow"], readers["pandas"]
    lines += ["", f"Reading {fast['rows']:,} CSV rows in chunks (ids as int64, ISO times as "
              f"milliseconds): pyarrow {fast['seconds']:.1f} s ({fast['peak_rss_mb']:,.0f} MB, "
              f"its read-ahead included), pandas {slow['seconds']:.1f} s "
              f"({slow['peak_rss_mb']:,.0f} MB): pyarrow is "
              f"{slow['seconds'] / fast['seconds']:.1f}x faster, and the importer reads with it "
              "(pandas is not a dependency)."]
  return lines


def events_beam_notes(everything) -> list:
  """Lines under the `events_beam` table: the pipeline against the chunked importer."""
  rows = {r["importer"]: r for r in _results(everything, "events_beam")}
  if {"data.prepare", "data.prepare_beam"} - set(rows):
    return []
  chunked, beam = rows["data.prepare"], rows["data.prepare_beam"]
  cores = everything["events_beam"]["environment"]["threads"]
  load = max(r[k] for r in rows.values() for k in ("load_average_before", "load_average_after"))
  return [f"On {beam['events']:,} events the Beam pipeline on the DirectRunner took "
          f"{beam['seconds']:,.0f} s ({beam['peak_rss_mb']:,.0f} MB) and the chunked importer "
          f"{chunked['seconds']:,.0f} s ({chunked['peak_rss_mb']:,.0f} MB): "
          f"{beam['seconds'] / chunked['seconds']:.1f}x, " +
          ("the same folder byte for byte. " if beam["same_folder"] else "different folders. ") +
          "The DirectRunner runs every stage in one process, element by element: the figure is "
          "the pipeline's overhead on one machine, not what a cluster runner spreads over "
          f"workers. The load average reached {load:.1f} on {cores} cores" +
          (": other processes shared the machine, so the times are upper bounds."
           if load >= cores else ".")]


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
    if name == "events_import":
      lines += [*events_import_notes(everything), ""]
    if name == "events_beam":
      lines += [*events_beam_notes(everything), ""]
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
