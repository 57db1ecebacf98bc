r"""Recall@20, latency, export size and load time of the three top-K indexes, from Gowalla size to
millions of items, within the memory this machine has.

    python -m benchmarks.index_scale [--run_dir=RUN] [--num_queries=1000]
        [--large_items=1000000,10000000] [--memory_budget_gb=G] [--memory_margin=1.2]
        [--export_dir=/tmp] [--nogowalla] [--nosweep] [--output=results/serving_index_recall]

Catalogues:
- Gowalla size (29,510 items; `--nogowalla` skips it): with `--run_dir`, the trained model's
  candidate vectors and the session vectors of the first test examples of its dataset; without
  it, synthetic clustered unit vectors of the same size and dimension (256).
- each `--large_items` size (default 1,000,000 and 10,000,000): synthetic clustered unit vectors,
  dim 256, queries near random items (`clustered_catalogue`).

For each catalogue: exact top-20 by a matmul, then for each index (default options of
`tfrs_attenmixer.topk`): build time, recall@20 against the exact top-20
(`topk.retrieval_recall`), the median latency of one `tf.function` call (as served) for batches
of 1 and 64 queries, then the export: the index saved as a SavedModel (`IndexExport`, saved as
`trainer.export` saves its `ServingModule`), its size on disk, and the time of
`tf.saved_model.load` and of the loaded model's first call, in this process (the built index is
deleted first; ScaNN's ops are already loaded). The export is then deleted. Unless `--nosweep`,
the searched share of the approximate indexes (and ScaNN's reordering) is swept on the same
built index.

Memory. The large sizes run smallest first. Before each, the benchmark estimates how much its
resident memory will grow (the catalogue, the index's copies of it, the export's reload):
`bytes per item x items`, with bytes per item the peak growth per item measured at the largest
size run so far (before the first, `PRIOR_COPIES` float32 copies of the vectors). The estimate
x `--memory_margin` must fit in the memory available (`/proc/meminfo` MemAvailable, or
`--memory_budget_gb`), and the largest export (likewise extrapolated) in the free space of
`--export_dir`. A size that does not fit is skipped, with the reason recorded, and replaced by
the largest size that fits (2 significant digits) if that is larger than every size already run.
The peak is VmHWM of /proc/self/status, reset (/proc/self/clear_refs) at the start of each
catalogue and index; memory is released between them.

Writes `<output>.md` and `<output>.json`, with the provenance of `benchmarks.common.environment`.
"""

import ctypes
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context  # clear_kernel_cache has no public API

from benchmarks import common
from data.atomic import atomic_output
from tfrs_attenmixer import topk

GOWALLA_ITEMS = 29_510
DIM = 256
K = 20
# Shares of the leaves / partitions searched in the sweeps.
GOWALLA_SHARES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
LARGE_SHARES = (0.01, 0.02, 0.05, 0.1, 0.2)
# Before any large size is measured: peak growth of the resident memory, and largest export, in
# float32 copies of the catalogue's vectors (measured: 7.9 and 1.6 at 100,000 items, 7.3 and 1.5
# at 200,000; about 6.8 copies a further item).
PRIOR_COPIES = 8.0
PRIOR_EXPORT_COPIES = 2.0
GIB = 2**30  # memory is reported in GiB
# The indexes in the order they run: ScaNN last, as about 2 float32 copies of the catalogue stay
# resident after it is deleted (its build-time searcher stays in TensorFlow's resource manager),
# which would add to the next index's peak.
RUN_ORDER = ("brute_force", "portable_ann", "scann")

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """The flags of the command line (defined when run, so tests and benchmarks can import this)."""
  flags.DEFINE_string("run_dir", None, "Run folder of a model trained on Gowalla (optional).")
  flags.DEFINE_integer("num_queries", 1000, "Queries per catalogue for recall.")
  flags.DEFINE_bool("gowalla", True, "Benchmark the Gowalla-size catalogue (trained model with "
                    "--run_dir, else synthetic).")
  flags.DEFINE_list("large_items", ["1000000", "10000000"],
                    "Sizes of the large synthetic catalogues, run smallest first (empty: none).")
  flags.DEFINE_float("memory_budget_gb", None, "Memory (GiB, 2^30 bytes) the benchmark may add "
                     "to its resident memory. Default: MemAvailable of /proc/meminfo before each "
                     "size.")
  flags.DEFINE_float("memory_margin", 1.2, "A size runs if its estimated memory (and export "
                     "size) times this fits.")
  flags.DEFINE_string("export_dir", None, "Folder of the temporary exports (on disk, not "
                      "tmpfs). Default: the system temporary folder.")
  flags.DEFINE_bool("sweep", True, "Sweep the search breadth of the approximate indexes.")
  flags.DEFINE_string("output", "results/serving_index_recall", "Output path without extension.")
  flags.register_validator("large_items",
                           lambda sizes: all(size.replace("_", "").isdigit() for size in sizes),
                           "--large_items must be a comma-separated list of item counts")

Catalogue = Tuple[np.ndarray, np.ndarray, str]  # candidates [N, dim], queries, description


# ---------------------------------------------------------------------------------- catalogues

def clustered_catalogue(num_items: int, num_queries: int, dim: int = DIM, seed: int = 0,
                        items_per_cluster: int = 200, spread: float = 1.0,
                        query_noise: float = 0.5,
                        chunk: int = 65_536) -> Tuple[np.ndarray, np.ndarray]:
  """Unit item vectors around random cluster centres, and unit queries near random items.

  item = unit(centre + spread * g), query = unit(item + query_noise * g'), g, g' standard
  normal / sqrt(dim), centres unit normal: about num_items / items_per_cluster clusters.
  Generated in float32 chunks of `chunk` items (no float64 copy of the catalogue).
  """
  rng = np.random.default_rng(seed)
  centres = _unit(rng.standard_normal((max(1, num_items // items_per_cluster), dim), np.float32))
  items = np.empty((num_items, dim), np.float32)
  for start in range(0, num_items, chunk):
    count = min(chunk, num_items - start)
    noise = rng.standard_normal((count, dim), np.float32) * np.float32(spread / math.sqrt(dim))
    items[start:start + count] = _unit(centres[rng.integers(0, len(centres), count)] + noise)
  noise = rng.standard_normal((num_queries, dim), np.float32) * np.float32(
      query_noise / math.sqrt(dim))
  queries = _unit(items[rng.integers(0, num_items, num_queries)] + noise)
  return items, queries


def synthetic_loader(num_items: int, num_queries: int, seed: int) -> Callable[[], Catalogue]:
  """A function making the `clustered_catalogue` of `num_items`, with its description."""
  description = (f"synthetic clustered unit vectors "
                 f"({clustered_catalogue.__doc__.split('.')[0]})")
  return lambda: (*clustered_catalogue(num_items, num_queries, seed=seed), description)


def trained_catalogue(run_dir: str, num_queries: int) -> Catalogue:
  """Candidate vectors of a trained model and session vectors of test examples spread evenly
  over its test split (as the exporter measures recall: `trainer.export.held_out_queries`)."""
  from trainer.export import held_out_queries  # pylint: disable=g-import-not-at-top
  from trainer.run_dir import load_trained_model  # pylint: disable=g-import-not-at-top
  model, prepared, config = load_trained_model(run_dir)
  queries = held_out_queries(model, prepared, "test", config.train.max_length, num_queries)
  description = (f"trained model of {run_dir} ({prepared.name}, {prepared.num_items} items, "
                 f"dim {model.config.embedding_dim}{_training_summary(run_dir)}); queries: "
                 f"session vectors of {len(queries)} test examples spread over the split")
  return model.candidate_embeddings().numpy(), queries, description


def _training_summary(run_dir: str) -> str:
  """", trained on N examples, validation HR@20 x" from the run's metrics.json, if any (test
  HR@20 for a refit, which holds no validation split out)."""
  path = os.path.join(run_dir, "metrics.json")
  if not os.path.isfile(path):
    return ""
  with open(path) as metrics_file:
    metrics = json.load(metrics_file)
  examples = sum(epoch.get("train_examples", 0) for epoch in metrics.get("epochs", []))
  split = "valid" if metrics.get("valid") else "test"
  hit_rate = (metrics.get(split) or {}).get("hr_at_20", float("nan"))
  return (f", trained on {examples:,} examples, "
          f"{'validation' if split == 'valid' else 'test'} HR@20 {hit_rate:.2f}")


# ---------------------------------------------------------------------------------- memory

def resident_bytes() -> int:
  """This process's resident memory now (VmRSS)."""
  return common.proc_bytes("/proc/self/status", "VmRSS") or 0


def available_bytes() -> int:
  """Memory the system can give without swapping (MemAvailable)."""
  return common.proc_bytes("/proc/meminfo", "MemAvailable") or 0


class PeakRss:
  """Peak resident memory of successive stages of this process.

  VmHWM, reset to the current resident memory at the start of each stage by writing 5 to
  /proc/self/clear_refs. Where that is not allowed, each stage's peak is the process's
  lifetime peak (VmHWM, or `ru_maxrss`), so at least the true one (`resettable` says which).
  """

  def __init__(self):
    self.resettable = self._reset()

  def stage(self) -> int:
    """The peak (bytes) since the previous call or the creation; starts the next stage."""
    peak = common.proc_bytes("/proc/self/status", "VmHWM")
    if peak is None:
      peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if self.resettable:
      self._reset()
    return peak

  @staticmethod
  def _reset() -> bool:
    try:
      with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
      return True
    except OSError:
      return False


def release_memory() -> None:
  """Frees what the previous index left: Python garbage, TensorFlow's cached eager kernels
  (which may hold ScaNN's build-time searcher), and glibc's free heap pages."""
  gc.collect()
  context.context().clear_kernel_cache()
  gc.collect()
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):  # not glibc
    pass


@dataclasses.dataclass
class MemoryModel:
  """Resources a catalogue of N items needs, linear in N: peak growth of the resident memory
  and size of the largest export, in bytes per item, measured at `basis` items (0: the prior)."""
  memory_per_item: float
  export_per_item: float
  basis: int = 0

  @classmethod
  def prior(cls, dim: int = DIM) -> "MemoryModel":
    return cls(PRIOR_COPIES * 4 * dim, PRIOR_EXPORT_COPIES * 4 * dim)

  @classmethod
  def measured(cls, catalogue: Dict[str, Any]) -> "MemoryModel":
    items = catalogue["num_items"]
    largest_export = max(row["export_bytes"] for row in catalogue["defaults"])
    return cls(catalogue["memory"]["peak_growth_bytes"] / items, largest_export / items, items)

  def describe(self) -> str:
    return (f"{self.memory_per_item:,.0f} bytes per item "
            + (f"measured at {self.basis:,} items" if self.basis else
               f"(prior: {PRIOR_COPIES:g} float32 copies of the vectors)"))


def plan_size(num_items: int, model: MemoryModel, margin: float, budget: int,
              free_disk: int) -> Dict[str, Any]:
  """Whether `num_items` fits: estimated memory growth and export size (x margin) against the
  memory budget and the free disk of the export folder."""
  memory = margin * model.memory_per_item * num_items
  disk = margin * model.export_per_item * num_items
  return {"requested_items": num_items, "fits": memory <= budget and disk <= free_disk,
          "estimated_memory_bytes": int(memory), "available_memory_bytes": int(budget),
          "estimated_export_bytes": int(disk), "free_disk_bytes": int(free_disk),
          "estimate": model.describe() + f", x {margin:g} margin", "ran_items": None}


def largest_fitting(model: MemoryModel, margin: float, budget: int, free_disk: int) -> int:
  """The largest catalogue (rounded down to 2 significant digits) that `plan_size` accepts."""
  items = int(min(budget / (margin * model.memory_per_item),
                  free_disk / (margin * model.export_per_item)))
  if items < 100:
    return items
  step = 10 ** (len(str(items)) - 2)
  return items // step * step


def skip_reason(plan: Dict[str, Any]) -> str:
  """"N did not fit: needs about X GiB, Y GiB available" (and the disk, if that is short)."""
  reason = (f"{plan['requested_items']:,} did not fit: needs about "
            f"{_gib(plan['estimated_memory_bytes'])} GiB, "
            f"{_gib(plan['available_memory_bytes'])} GiB available")
  if plan["estimated_export_bytes"] > plan["free_disk_bytes"]:
    reason += (f"; its export needs about {_gib(plan['estimated_export_bytes'])} GiB of disk, "
               f"{_gib(plan['free_disk_bytes'])} GiB free")
  return reason + f" ({plan['estimate']})"


# ---------------------------------------------------------------------------------- indexes

def exact_top_k(candidates: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
  """Rows [num_queries, k] of the k best candidates of each query by dot product."""
  table = tf.constant(candidates)
  rows = [tf.math.top_k(tf.matmul(tf.constant(queries[i:i + 100]), table, transpose_b=True),
                        k).indices.numpy() for i in range(0, len(queries), 100)]
  return np.concatenate(rows)


def measure(index: tf.keras.layers.Layer, queries: np.ndarray, exact: np.ndarray,
            batches: Tuple[int, ...] = (1, 64)) -> Dict[str, Any]:
  """Recall@20 of `index` against `exact`, and its median latency for each batch size."""
  search = tf.function(lambda q: index(q, k=K),
                       input_signature=[tf.TensorSpec([None, queries.shape[1]], tf.float32)])
  rows = np.concatenate([search(queries[i:i + 50])[1].numpy()
                         for i in range(0, len(queries), 50)])
  result = {"recall_at_20": round(topk.retrieval_recall(rows, exact), 4)}
  for batch in batches:
    result[f"latency_ms_batch_{batch}"] = round(
        _median_ms(search, queries[:batch], 30 if batch == 1 else 10), 2)
  return result


def breadth_attribute(kind: str) -> Optional[str]:
  """The attribute of an index that sets how much of the catalogue a query searches."""
  return {"scann": "num_leaves_to_search", "portable_ann": "num_partitions_to_search"}.get(kind)


def sweep_index(index: tf.keras.layers.Layer, kind: str, options: Dict[str, Any],
                queries: np.ndarray, exact: np.ndarray,
                shares: Tuple[float, ...]) -> List[Dict[str, Any]]:
  """Recall and batch-1 latency of the built `index` searching each share of its leaves (and,
  for ScaNN, reordering other numbers of candidates). Leaves `index` set to the last variant."""
  attribute = breadth_attribute(kind)
  if attribute is None:
    return []
  leaves = options.get("num_leaves", options.get("num_partitions"))
  variants = [{attribute: max(1, math.ceil(leaves * share))} for share in shares]
  if kind == "scann":
    variants += [{"num_reordering_candidates": count} for count in (100, 250, 1000)]
  rows = []
  for variant in variants:
    for key, value in {**options, **variant}.items():
      if hasattr(index, key) and key != "num_leaves":
        setattr(index, key, value)
    rows.append({"index": kind, "options": {**options, **variant},
                 **measure(index, queries, exact, batches=(1,))})
    logging.info("%s", rows[-1])
  return rows


class IndexExport(tf.Module):
  """A SavedModel of a bare index: `serving_default` maps `queries` float32 [batch, dim] to
  `scores` float32 and `rows` int32 [batch, K] (the index inside `trainer.export`'s model)."""

  def __init__(self, index: tf.keras.layers.Layer, dim: int):
    super().__init__(name="index_export")
    self.index = index
    self.serving_default = tf.function(
        self._search, input_signature=[tf.TensorSpec([None, dim], tf.float32, name="queries")])

  def _search(self, queries: tf.Tensor) -> Dict[str, tf.Tensor]:
    scores, rows = self.index(queries, k=K)
    return {"scores": scores, "rows": rows}


def save_index(index: tf.keras.layers.Layer, kind: str, dim: int,
               directory: str) -> Dict[str, Any]:
  """Saves `index` as a SavedModel in `directory` (ScaNN's ops allowed as `trainer.export`
  does); its save time and total size on disk."""
  module = IndexExport(index, dim)
  started = time.perf_counter()
  tf.saved_model.save(module, directory, signatures={"serving_default": module.serving_default},
                      options=tf.saved_model.SaveOptions(
                          namespace_whitelist=["Scann"] if kind == "scann" else None))
  seconds = time.perf_counter() - started
  size = sum(os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(directory) for name in names)
  return {"export_seconds": round(seconds, 2), "export_bytes": size}


def load_index(directory: str, queries: np.ndarray, expected_rows: np.ndarray) -> Dict[str, Any]:
  """Times `tf.saved_model.load` of the export in `directory` (in this process) and the first
  call of its `serving_default` on `queries`; checks that call returns `expected_rows`."""
  started = time.perf_counter()
  loaded = tf.saved_model.load(directory)
  loaded_at = time.perf_counter()
  rows = loaded.signatures["serving_default"](queries=tf.constant(queries))["rows"].numpy()
  called_at = time.perf_counter()
  return {"load_seconds": round(loaded_at - started, 2),
          "first_call_seconds": round(called_at - loaded_at, 3),
          "export_matches": bool(np.array_equal(rows, expected_rows))}


def benchmark_index(kind: str, candidates: np.ndarray, queries: np.ndarray, exact: np.ndarray,
                    sweep_queries: int, sweep_shares: Optional[Tuple[float, ...]],
                    export_dir: str, peaks: PeakRss) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
  """One index with its default options: build, measure, save, (sweep,) delete, load the export.

  Returns its row (with the peak resident memory of all that) and its sweep rows."""
  options = topk.default_options(kind, len(candidates))
  started = time.perf_counter()
  index = topk.build_index(kind, candidates, k=K, **options)
  row = {"index": kind, "options": options,
         "build_seconds": round(time.perf_counter() - started, 2),
         **measure(index, queries, exact)}
  first_query = queries[:1]
  expected_rows = index(first_query, k=K)[1].numpy()
  with tempfile.TemporaryDirectory(prefix="index_scale-", dir=export_dir) as directory:
    row.update(save_index(index, kind, candidates.shape[1], directory))
    sweeps = sweep_index(index, kind, options, queries[:sweep_queries], exact[:sweep_queries],
                         sweep_shares) if sweep_shares else []
    del index
    release_memory()
    row.update(load_index(directory, first_query, expected_rows))
  release_memory()
  row["peak_rss_bytes"] = peaks.stage()
  logging.info("%s (resident after: %.2f GiB)", row, resident_bytes() / GIB)
  return row, sweeps


def benchmark_catalogue(name: str, load: Callable[[], Catalogue], sweep_queries: int,
                        sweep_shares: Optional[Tuple[float, ...]],
                        export_dir: str) -> Dict[str, Any]:
  """Loads a catalogue, benchmarks the three indexes on it (`benchmark_index`), and records the
  peak growth of the resident memory from before the catalogue was loaded."""
  peaks = PeakRss()
  before = resident_bytes()
  candidates, queries, description = load()
  logging.info("%s: %d items x %d, %d queries", name, *candidates.shape, len(queries))
  started = time.perf_counter()
  exact = exact_top_k(candidates, queries)
  exact_seconds = time.perf_counter() - started
  peak = peaks.stage()
  defaults, sweeps = [], []
  for kind in RUN_ORDER:
    row, rows = benchmark_index(kind, candidates, queries, exact, sweep_queries, sweep_shares,
                                export_dir, peaks)
    defaults.append(row)
    sweeps += rows
    peak = max(peak, row["peak_rss_bytes"])
  num_items, dim = candidates.shape
  del candidates
  release_memory()
  memory = {"rss_before_bytes": before, "peak_rss_bytes": peak,
            "peak_growth_bytes": peak - before,
            "peak_growth_bytes_per_item": round((peak - before) / num_items, 1),
            "peak_rss_resettable": peaks.resettable}
  logging.info("%s: memory %s", name, memory)
  return {"name": name, "description": description, "num_items": int(num_items),
          "dim": int(dim), "num_queries": len(queries),
          "exact_seconds": round(exact_seconds, 2), "defaults": defaults, "sweep": sweeps,
          "sweep_queries": min(sweep_queries, len(queries)), "memory": memory}


def large_catalogues(sizes: List[int], num_queries: int, budget: Optional[int], margin: float,
                     export_dir: str, sweep: bool
                     ) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
  """Benchmarks the synthetic catalogues of `sizes` that fit (smallest first), each replaced,
  if it does not, by the largest size that fits. Returns (catalogues, plans): a plan per
  requested size with its estimate, `fits`, `ran_items` and, if skipped, `reason`."""
  catalogues, plans = [], []
  model = MemoryModel.prior()
  largest_run = 0
  for size in sorted(set(sizes)):
    memory = budget if budget is not None else available_bytes()
    free_disk = shutil.disk_usage(export_dir).free
    plan = plan_size(size, model, margin, memory, free_disk)
    plans.append(plan)
    if not plan["fits"]:
      plan["reason"] = skip_reason(plan)
      logging.warning("%s", plan["reason"])
      size = largest_fitting(model, margin, memory, free_disk)
      if size <= max(largest_run, K):
        continue
      logging.info("Running the largest size that fits instead: %d items", size)
    plan["ran_items"] = size
    catalogue = benchmark_catalogue("Large synthetic", synthetic_loader(size, num_queries, seed=1),
                                    min(200, num_queries), LARGE_SHARES if sweep else None,
                                    export_dir)
    if size != plan["requested_items"]:
      catalogue["stepped_down_from"] = plan["requested_items"]
    catalogues.append(catalogue)
    model = MemoryModel.measured(catalogue)
    largest_run = size
  return catalogues, plans


# ---------------------------------------------------------------------------------- report

def write_report(path: str, report: Dict[str, Any]) -> None:
  """`<path>.json` (everything) and `<path>.md` (the tables)."""
  with atomic_output(path + ".json") as temporary:
    with open(temporary, "w") as out:
      json.dump(report, out, indent=1)
  with atomic_output(path + ".md") as temporary:
    with open(temporary, "w") as out:
      out.write("\n".join(markdown(report)))


def markdown(report: Dict[str, Any]) -> List[str]:
  """The report's Markdown lines."""
  environment = report["environment"]
  lines = ["# Top-K index recall@20, latency, export size and load time", "",
           f"Command: `{environment['command']}` on {environment['date']}", "",
           f"Machine: {environment['machine']}, CPU {environment['cpu']}, "
           f"{environment['threads']} threads shared with other jobs (load average at the end "
           f"{environment['load_average_1min']:.1f}), {environment['memory_total_bytes'] / GIB:.1f}"
           f" GiB of memory; TensorFlow {environment['tensorflow']}. Latency: median wall time of "
           "one `tf.function` call of the index (query vectors in, top-20 out), in process. "
           "Recall: share of the exact top-20 found (`tfrs_attenmixer.topk.retrieval_recall`). "
           "Export: the index alone saved as a SavedModel (`benchmarks.index_scale.IndexExport`), "
           "total bytes on disk; load: `tf.saved_model.load` of it in the benchmark's process "
           "(the built index deleted first; TensorFlow and ScaNN's ops already loaded), then its "
           "first call on one query (which must return the built index's answer: `matches`). "
           "Peak RSS: VmHWM of the process during the index's build, search, export and load, "
           "including the catalogue and its exact top-20.", ""]
  lines += _sizes_markdown(report)
  for catalogue in report["catalogues"]:
    lines += _catalogue_markdown(catalogue)
  return lines


def _sizes_markdown(report: Dict[str, Any]) -> List[str]:
  """The large sizes asked for, which ran, and why the others did not."""
  plans = report["large_items"]
  if not plans:
    return []
  largest = max(plan["ran_items"] or 0 for plan in plans)
  asked = ", ".join(f"{plan['requested_items']:,}" for plan in plans)
  lines = ["## Large catalogue sizes", "",
           f"Asked for: {asked} items "
           f"(`--large_items`), each if its estimated memory fits (margin "
           f"{report['memory_margin']:g}; memory available: "
           f"{'--memory_budget_gb' if report['memory_budget_forced'] else 'MemAvailable'}).", ""]
  for plan in plans:
    if plan["fits"]:
      lines.append(f"- {plan['requested_items']:,}: run (needs about "
                   f"{_gib(plan['estimated_memory_bytes'])} GiB, "
                   f"{_gib(plan['available_memory_bytes'])} GiB available; {plan['estimate']})")
    else:
      lines.append(f"- {plan['reason']}; "
                   + (f"largest run: {largest:,} items" if largest else "no large size ran"))
  return lines + [""]


def _catalogue_markdown(catalogue: Dict[str, Any]) -> List[str]:
  """A catalogue's section: memory, default-option table, sweep table."""
  memory = catalogue["memory"]
  growth = memory["peak_growth_bytes_per_item"]
  lines = [f"## {catalogue['name']}: {catalogue['num_items']:,} items, "
           f"dim {catalogue['dim']}", "", catalogue["description"], ""]
  if "stepped_down_from" in catalogue:
    lines += [f"The largest size that fits in memory here, instead of "
              f"{catalogue['stepped_down_from']:,}.", ""]
  lines += [f"Memory: resident {memory['rss_before_bytes'] / GIB:.2f} GiB before the catalogue, "
            f"peak {memory['peak_rss_bytes'] / GIB:.2f} GiB: +{growth:,.0f} bytes per item "
            f"({growth / (4 * catalogue['dim']):.1f} float32 copies of the vectors).", "",
            f"Default options (`topk.default_options`), {catalogue['num_queries']} queries:", "",
            "| index | options | recall@20 | latency batch 1 (ms) | latency batch 64 (ms) "
            "| build (s) | export (MB) | save (s) | load (s) | first call (s) | matches "
            "| peak RSS (GiB) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for row in catalogue["defaults"]:
    lines.append(f"| {row['index']} | {_options(row['options'])} | {row['recall_at_20']:.4f} | "
                 f"{row['latency_ms_batch_1']} | {row['latency_ms_batch_64']} | "
                 f"{row['build_seconds']} | {row['export_bytes'] / 1e6:,.1f} | "
                 f"{row['export_seconds']} | {row['load_seconds']} | "
                 f"{row['first_call_seconds']} | {'yes' if row['export_matches'] else 'no'} | "
                 f"{row['peak_rss_bytes'] / GIB:.2f} |")
  if catalogue["sweep"]:
    lines += ["", f"Sweep of the search breadth on the same built index "
              f"({catalogue['sweep_queries']} queries):", "",
              "| index | options | recall@20 | latency batch 1 (ms) |", "|---|---|---|---|"]
    for row in catalogue["sweep"]:
      lines.append(f"| {row['index']} | {_options(row['options'])} | "
                   f"{row['recall_at_20']:.4f} | {row['latency_ms_batch_1']} |")
  return lines + [""]


# ---------------------------------------------------------------------------------- main

def main(argv: List[str]) -> None:
  del argv
  export_dir = FLAGS.export_dir or tempfile.gettempdir()
  os.makedirs(export_dir, exist_ok=True)
  budget = None if FLAGS.memory_budget_gb is None else int(FLAGS.memory_budget_gb * GIB)
  catalogues = []
  if FLAGS.gowalla:
    load = ((lambda: trained_catalogue(FLAGS.run_dir, FLAGS.num_queries)) if FLAGS.run_dir else
            synthetic_loader(GOWALLA_ITEMS, FLAGS.num_queries, seed=0))
    catalogues.append(benchmark_catalogue("Gowalla size", load, FLAGS.num_queries,
                                          GOWALLA_SHARES if FLAGS.sweep else None, export_dir))
  sizes = [int(size) for size in FLAGS.large_items if int(size) > 0]
  large, plans = large_catalogues(sizes, FLAGS.num_queries, budget, FLAGS.memory_margin,
                                  export_dir, FLAGS.sweep)
  environment = {**common.environment(), "machine": platform.platform(),
                 "tensorflow": tf.__version__,
                 "memory_total_bytes": common.proc_bytes("/proc/meminfo", "MemTotal") or 0}
  write_report(FLAGS.output, {"environment": environment, "memory_margin": FLAGS.memory_margin,
                              "memory_budget_forced": budget is not None, "large_items": plans,
                              "catalogues": catalogues + large})
  print(f"written to {FLAGS.output}.md and .json")


def _median_ms(function, queries: np.ndarray, repeats: int) -> float:
  queries = tf.constant(queries)
  function(queries)  # trace and warm up
  times = []
  for _ in range(repeats):
    started = time.perf_counter()
    function(queries)[1].numpy()
    times.append(time.perf_counter() - started)
  return 1000 * float(np.median(times))


def _gib(size: float) -> str:
  """Bytes as GiB: 2 decimals below 1 GiB, else 1."""
  return f"{size / GIB:.2f}" if size < GIB else f"{size / GIB:.1f}"


def _options(options: Dict[str, Any]) -> str:
  return ", ".join(f"{key}={value}" for key, value in sorted(options.items())) or "-"


def _unit(x: np.ndarray) -> np.ndarray:
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
