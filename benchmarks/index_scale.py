r"""Recall@20 and in-process latency of the three top-K indexes, at Gowalla size and at 1M items.

    python -m benchmarks.index_scale [--run_dir=RUN] [--num_queries=1000]
        [--large_items=1000000] [--output=results/serving_index_recall]

Catalogues:
- Gowalla size (29,510 items): with `--run_dir`, the trained model's candidate vectors and the
  session vectors of the first test examples of its dataset; without it, synthetic clustered unit
  vectors of the same size and dimension (256).
- `--large_items` (default 1,000,000) synthetic clustered unit vectors, dim 256, queries near
  random items (`clustered_catalogue`).

For each catalogue: exact top-20 by a chunked matmul, then for each index (default options of
`tfrs_attenmixer.topk`, plus a sweep of the searched fraction for the approximate ones): build
time, recall@20 against the exact top-20 (`topk.retrieval_recall`), and the median latency of
one `tf.function` call (as served) for batches of 1 and 64 queries. Writes `<output>.md` and
`<output>.json`.
"""

import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from data.atomic import atomic_output
from tfrs_attenmixer import topk

GOWALLA_ITEMS = 29_510
DIM = 256
K = 20
# Shares of the leaves / partitions searched in the sweeps.
GOWALLA_SHARES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
LARGE_SHARES = (0.01, 0.02, 0.05, 0.1, 0.2)

flags.DEFINE_string("run_dir", None, "Run folder of a model trained on Gowalla (optional).")
flags.DEFINE_integer("num_queries", 1000, "Queries per catalogue for recall.")
flags.DEFINE_integer("large_items", 1_000_000, "Size of the large synthetic catalogue (0: skip).")
flags.DEFINE_string("output", "results/serving_index_recall", "Output path without extension.")
FLAGS = flags.FLAGS


def clustered_catalogue(num_items: int, num_queries: int, dim: int = DIM, seed: int = 0,
                        items_per_cluster: int = 200, spread: float = 1.0,
                        query_noise: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
  """Unit item vectors around random cluster centres, and unit queries near random items.

  item = unit(centre + spread * g), query = unit(item + query_noise * g'), g, g' standard
  normal / sqrt(dim), centres unit normal: about num_items / items_per_cluster clusters.
  """
  rng = np.random.default_rng(seed)
  centres = _unit(rng.normal(size=(max(1, num_items // items_per_cluster), dim)))
  items = np.empty((num_items, dim), np.float32)
  for start in range(0, num_items, 100_000):
    count = min(100_000, num_items - start)
    noise = rng.normal(size=(count, dim)) * (spread / math.sqrt(dim))
    items[start:start + count] = _unit(centres[rng.integers(0, len(centres), count)] + noise)
  noise = rng.normal(size=(num_queries, dim)) * (query_noise / math.sqrt(dim))
  queries = _unit(items[rng.integers(0, num_items, num_queries)] + noise)
  return items, queries


def trained_catalogue(run_dir: str, num_queries: int) -> Tuple[np.ndarray, np.ndarray, str]:
  """Candidate vectors of a trained model and session vectors of its first test examples."""
  from data.pipeline import InputConfig, make_dataset  # pylint: disable=g-import-not-at-top
  from trainer.run_dir import load_trained_model  # pylint: disable=g-import-not-at-top
  model, prepared, config = load_trained_model(run_dir)
  batches = make_dataset(prepared, "test", InputConfig(batch_size=500,
                                                       max_length=config.train.max_length),
                         training=False)
  queries = []
  for batch in batches:
    queries.append(model.query_tower(batch["items"], training=False).numpy())
    if sum(map(len, queries)) >= num_queries:
      break
  description = (f"trained model of {run_dir} ({prepared.name}, {prepared.num_items} items, "
                 f"dim {model.config.embedding_dim}{_training_summary(run_dir)}); queries: "
                 f"session vectors of the first {num_queries} test examples")
  return model.candidate_embeddings().numpy(), np.concatenate(queries)[:num_queries], description


def _training_summary(run_dir: str) -> str:
  """", trained on N examples, validation HR@20 x" from the run's metrics.json, if any."""
  path = os.path.join(run_dir, "metrics.json")
  if not os.path.isfile(path):
    return ""
  with open(path) as metrics_file:
    metrics = json.load(metrics_file)
  examples = sum(epoch.get("train_examples", 0) for epoch in metrics.get("epochs", []))
  return (f", trained on {examples:,} examples, validation HR@20 "
          f"{metrics.get('valid', {}).get('hr_at_20', float('nan')):.2f}")


def exact_top_k(candidates: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
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


def benchmark_catalogue(name: str, description: str, candidates: np.ndarray,
                        queries: np.ndarray, sweep_queries: int,
                        sweep_shares: Tuple[float, ...]) -> Dict[str, Any]:
  """Default-option rows for the three indexes, then a sweep of the searched share (and of
  ScaNN's reordering) on the same built index."""
  logging.info("%s: %d items x %d, %d queries", name, *candidates.shape, len(queries))
  started = time.perf_counter()
  exact = exact_top_k(candidates, queries)
  exact_seconds = time.perf_counter() - started
  defaults, sweeps = [], []
  for kind in topk.INDEX_KINDS:
    options = topk.default_options(kind, len(candidates))
    started = time.perf_counter()
    index = topk.build_index(kind, candidates, k=K, **options)
    row = {"index": kind, "options": options,
           "build_seconds": round(time.perf_counter() - started, 2),
           **measure(index, queries, exact)}
    logging.info("%s", row)
    defaults.append(row)
    attribute = breadth_attribute(kind)
    if attribute is None:
      continue
    leaves = options.get("num_leaves", options.get("num_partitions"))
    variants = [{attribute: max(1, math.ceil(leaves * share))} for share in sweep_shares]
    if kind == "scann":
      variants += [{"num_reordering_candidates": count} for count in (100, 250, 1000)]
    for variant in variants:
      for key, value in {**options, **variant}.items():
        if hasattr(index, key) and key != "num_leaves":
          setattr(index, key, value)
      row = {"index": kind, "options": {**options, **variant},
             **measure(index, queries[:sweep_queries], exact[:sweep_queries], batches=(1,))}
      logging.info("%s", row)
      sweeps.append(row)
    del index
  return {"name": name, "description": description, "num_items": int(candidates.shape[0]),
          "dim": int(candidates.shape[1]), "num_queries": len(queries),
          "exact_seconds": round(exact_seconds, 2), "defaults": defaults, "sweep": sweeps,
          "sweep_queries": min(sweep_queries, len(queries))}


def write_report(path: str, catalogues: List[Dict[str, Any]], command: str) -> None:
  environment = {"command": command, "machine": platform.platform(),
                 "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                 "tensorflow": tf.__version__}
  with atomic_output(path + ".json") as temporary:
    with open(temporary, "w") as out:
      json.dump({"environment": environment, "catalogues": catalogues}, out, indent=1)
  lines = ["# Top-K index recall@20 and latency", "",
           f"Command: `{command}`", "",
           f"Machine: {environment['machine']}, {environment['cpus']} CPUs shared with other "
           f"jobs (load average at the end {', '.join(f'{x:.1f}' for x in environment['load_average'])}"
           f"); TensorFlow {environment['tensorflow']}. Latency: median wall time of one "
           "`tf.function` call of the index (query vectors in, top-20 out), in process. Recall: "
           "share of the exact top-20 found (`tfrs_attenmixer.topk.retrieval_recall`).", ""]
  for catalogue in catalogues:
    lines += [f"## {catalogue['name']}: {catalogue['num_items']:,} items, dim {catalogue['dim']}",
              "", catalogue["description"], "",
              f"Default options (`topk.default_options`), {catalogue['num_queries']} queries:", "",
              "| index | options | recall@20 | latency batch 1 (ms) | latency batch 64 (ms) "
              "| build (s) |", "|---|---|---|---|---|---|"]
    for row in catalogue["defaults"]:
      lines.append(f"| {row['index']} | {_options(row['options'])} | {row['recall_at_20']:.4f} | "
                   f"{row['latency_ms_batch_1']} | {row['latency_ms_batch_64']} | "
                   f"{row['build_seconds']} |")
    lines += ["", f"Sweep of the search breadth on the same built index "
              f"({catalogue['sweep_queries']} queries):", "",
              "| index | options | recall@20 | latency batch 1 (ms) |", "|---|---|---|---|"]
    for row in catalogue["sweep"]:
      lines.append(f"| {row['index']} | {_options(row['options'])} | {row['recall_at_20']:.4f} | "
                   f"{row['latency_ms_batch_1']} |")
    lines.append("")
  with atomic_output(path + ".md") as temporary:
    with open(temporary, "w") as out:
      out.write("\n".join(lines))


def main(argv: List[str]) -> None:
  del argv
  command = "python -m benchmarks.index_scale " + " ".join(sys.argv[1:])
  catalogues = []
  if FLAGS.run_dir:
    candidates, queries, description = trained_catalogue(FLAGS.run_dir, FLAGS.num_queries)
  else:
    candidates, queries = clustered_catalogue(GOWALLA_ITEMS, FLAGS.num_queries)
    description = f"synthetic clustered unit vectors ({clustered_catalogue.__doc__.split('.')[0]})"
  catalogues.append(benchmark_catalogue("Gowalla size", description, candidates, queries,
                                        FLAGS.num_queries, GOWALLA_SHARES))
  if FLAGS.large_items:
    candidates, queries = clustered_catalogue(FLAGS.large_items, FLAGS.num_queries, seed=1)
    catalogues.append(benchmark_catalogue(
        "Large synthetic", "synthetic clustered unit vectors, about 200 items per cluster, "
        "queries near random items (`clustered_catalogue`)", candidates, queries,
        min(200, FLAGS.num_queries), LARGE_SHARES))
  write_report(FLAGS.output, catalogues, command)
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


def _options(options: Dict[str, Any]) -> str:
  return ", ".join(f"{key}={value}" for key, value in sorted(options.items())) or "-"


def _unit(x: np.ndarray) -> np.ndarray:
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


if __name__ == "__main__":
  app.run(main)
