r"""gRPC serving latency and throughput of the exported model, beside the in-process call latency.

    python -m benchmarks.serving --run_dir=RUN [--duration_seconds=5]
        [--indexes=brute_force,scann,portable_ann] [--clients=1,8,32] [--batch_sizes=1,64]
        [--export_dir=DIR] [--output=results/serving_benchmark]

For each index: exports the run's model (`trainer.export.export_model`) into a temporary folder
(or uses `<export_dir>/<model name>/` if `--export_dir` holds it already), then
1. in-process: loads the SavedModel in this process (importing `scann` for the ScaNN export) and
   times `serving_default` on batches of 1 and 64 realistic sessions (test sessions of the run's
   prepared dataset, as raw ids): median and p99 over many calls;
2. server: starts `python -m serving.server` on a free port of 127.0.0.1, and for each batch size
   and client count runs N client threads (each with its own gRPC channel and
   `PredictionServiceStub`) sending `Predict` requests for `--duration_seconds`: p50 and p99
   latency, requests/s, sessions/s and failures; then stops the server with SIGTERM.

The server overhead is p50(server, 1 client) / p50(in-process), for the same batch. The server,
the clients and this process share the machine's cores (report: CPU, thread count, load).
Writes `<output>.md`, `<output>.json`, and `results/benchmarks.json` entry `serving`.
"""

import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

from absl import app
from absl import flags
from absl import logging
import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks import common
from data.atomic import atomic_output
from data.tfrecord import parse_sessions

FLAGS = flags.FLAGS

# --server_batching settings -> the server's flags.
BATCHING_FLAGS = {"off": (), "on": ("--enable_batching",)}

TARGETS = ("in-process batch-1 top-20 < 1 ms (brute force, 29,510 items); gRPC p50 < 3 ms and "
           "p99 < 15 ms with 8 clients; >= 1,000 requests/s at batch 1")


def test_sessions(prepared, raw_ids: np.ndarray, count: int, max_length: int) -> List[np.ndarray]:
  """The first `count` test sessions (their last `max_length` items) as int64 raw ids."""
  sessions = []
  for batch in tf.data.TFRecordDataset(prepared.files("test")).batch(512):
    for row in parse_sessions(batch).to_list():
      if row:
        sessions.append(raw_ids[np.asarray(row[-max_length:])].astype(np.int64))
    if len(sessions) >= count:
      break
  return sessions[:count]


def make_batches(sessions: List[np.ndarray], batch_size: int) -> List[np.ndarray]:
  """Consecutive groups of `batch_size` sessions, each right-padded with 0 to its longest."""
  batches = []
  for start in range(0, len(sessions) - batch_size + 1, batch_size):
    group = sessions[start:start + batch_size]
    padded = np.zeros([batch_size, max(len(s) for s in group)], np.int64)
    for row, session in enumerate(group):
      padded[row, :len(session)] = session
    batches.append(padded)
  return batches


def percentile_ms(latencies: List[float], q: float) -> float:
  return 1000.0 * float(np.percentile(latencies, q)) if latencies else float("nan")


def in_process(saved_model_dir: str, batches: Dict[int, List[np.ndarray]],
               seconds: float) -> Dict[int, Dict[str, float]]:
  """Median and p99 of one `serving_default` call of the loaded SavedModel, per batch size."""
  loaded = tf.saved_model.load(saved_model_dir)
  results = {}
  for batch_size, inputs in batches.items():
    tensors = [tf.constant(batch) for batch in inputs]
    results[batch_size] = {}
    for signature_name, output, prefix in (("serving_default", "item_ids", ""),
                                           ("session_embedding", "embedding", "embedding_")):
      signature = loaded.signatures[signature_name]
      for tensor in tensors[:5]:  # warm up
        signature(sessions=tensor)[output].numpy()
      latencies = []
      deadline = time.perf_counter() + seconds
      i = 0
      while time.perf_counter() < deadline or len(latencies) < 50:
        tensor = tensors[i % len(tensors)]
        started = time.perf_counter()
        signature(sessions=tensor)[output].numpy()
        latencies.append(time.perf_counter() - started)
        i += 1
      results[batch_size].update({prefix + "calls": len(latencies),
                                  prefix + "p50_ms": percentile_ms(latencies, 50),
                                  prefix + "p99_ms": percentile_ms(latencies, 99)})
  del loaded
  return results


def brute_force_floor(num_items: int, dim: int, batch_sizes: List[int],
                      seconds: float) -> Dict[int, Dict[str, float]]:
  """p50 ms of exact top-20 over a `num_items x dim` float32 table, nothing else.

  The unavoidable work of a brute-force query: one `[batch, dim] x [dim, N]` product (for small
  batches, reading the whole table from memory) and a top-k over N scores. Timed natively and
  under XLA, with the table stored `[N, dim]` (TFRS's layout, multiplied with `transpose_b`) and
  `[dim, N]` (`topk.BruteForce`'s); per batch size: the fastest of each layout (`n_by_d`,
  `d_by_n`) and of all four (`floor`).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  table = tf.Variable(tf.math.l2_normalize(tf.random.normal([num_items, dim]), axis=-1))
  transposed = tf.Variable(tf.transpose(table))
  products = {"n_by_d": lambda q: tf.matmul(q, table, transpose_b=True),
              "d_by_n": lambda q: tf.matmul(q, transposed)}
  floors = {}
  for batch_size in batch_sizes:
    queries = tf.math.l2_normalize(tf.random.normal([batch_size, dim]), axis=-1)
    medians = {layout: [] for layout in products}
    for jit_compile, layout in itertools.product((False, True), products):
      product = products[layout]
      search = tf.function(lambda q, product=product: tf.math.top_k(product(q), 20).indices,
                           jit_compile=jit_compile)
      search(queries).numpy()
      latencies = []
      deadline = time.perf_counter() + seconds / 4
      while time.perf_counter() < deadline or len(latencies) < 50:
        started = time.perf_counter()
        search(queries).numpy()
        latencies.append(time.perf_counter() - started)
      medians[layout].append(percentile_ms(latencies, 50))
    fastest = {layout: min(times) for layout, times in medians.items()}
    floors[batch_size] = {"floor": min(fastest.values()), **fastest}
  return floors


def load_test(address: str, model_name: str, requests: List[Any], num_clients: int,
              seconds: Optional[float] = None,
              max_requests: Optional[int] = None) -> Dict[str, Any]:
  """`num_clients` threads, each with its own channel, sending `requests` round robin.

  Each channel first sends one untimed request (to connect). The timed load stops after
  `seconds`, or once `max_requests` requests (answered or failed) are sent, whichever comes first.
  """
  del model_name  # in the requests
  if seconds is None and max_requests is None:
    raise ValueError("load_test needs seconds or max_requests")
  from serving import client as serving_client  # pylint: disable=g-import-not-at-top
  channels = [serving_client.channel(address) for _ in range(num_clients)]
  stubs = [prediction_service_pb2_grpc.PredictionServiceStub(c) for c in channels]
  for stub in stubs:  # connect each channel before timing
    stub.Predict(requests[0], timeout=30)
  latencies = [[] for _ in range(num_clients)]
  failures = [0] * num_clients
  errors = []
  start_barrier = threading.Barrier(num_clients + 1)
  tickets = itertools.count()  # the index of each request sent (next() is atomic in CPython)
  limit = math.inf if max_requests is None else max_requests
  timing = {}

  def worker(index):
    stub, mine = stubs[index], latencies[index]
    start_barrier.wait()
    deadline = timing["deadline"]
    while time.perf_counter() < deadline:
      ticket = next(tickets)
      if ticket >= limit:
        break
      request = requests[ticket % len(requests)]
      started = time.perf_counter()
      try:
        stub.Predict(request, timeout=30)
      except grpc.RpcError as error:
        failures[index] += 1
        if len(errors) < 3:
          errors.append(f"{error.code().name}: {error.details()}")
        continue
      mine.append(time.perf_counter() - started)

  threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(num_clients)]
  for thread in threads:
    thread.start()
  timing["deadline"] = math.inf if seconds is None else time.perf_counter() + seconds
  started = time.perf_counter()
  start_barrier.wait()
  for thread in threads:
    thread.join()
  elapsed = time.perf_counter() - started
  for c in channels:
    c.close()
  everything = [x for per_client in latencies for x in per_client]
  batch_size = int(requests[0].inputs["sessions"].tensor_shape.dim[0].size)
  return {"requests": len(everything), "failures": sum(failures), "errors": errors,
          "p50_ms": percentile_ms(everything, 50), "p99_ms": percentile_ms(everything, 99),
          "requests_per_second": len(everything) / elapsed,
          "sessions_per_second": len(everything) * batch_size / elapsed}


def ensure_export(model, prepared, config, export_base: str, index: str) -> str:
  """`<export_base>/<model name>/<newest version>`, exporting the model first if absent."""
  # pylint: disable=g-import-not-at-top  (TensorFlow only when a model is exported)
  from trainer import export
  from trainer import versions
  model_name = f"attenmixer_{index}"
  numbers = versions.existing_versions(os.path.join(export_base, model_name))
  if numbers:
    return os.path.join(export_base, model_name, str(numbers[-1]))
  started = time.perf_counter()
  path = export.export_model(model, prepared, export_base, model_name=model_name, index=index,
                             max_length=config.train.max_length)
  logging.info("exported %s in %.1f s", path, time.perf_counter() - started)
  return path


def start_server(model_base_path: str, model_name: str, log_dir: str, *server_flags: str):
  """`python -m serving.server` (gRPC only, no polling) serving `model_base_path` as `model_name`,
  with `server_flags` added.

  Returns the `serving.testing.ServerProcess` once a version is available (its log in `log_dir`);
  stops the server if none becomes available.
  """
  from serving import client as serving_client  # pylint: disable=g-import-not-at-top
  from serving import testing  # pylint: disable=g-import-not-at-top
  server = testing.ServerProcess(log_dir, f"--model_name={model_name}",
                                 f"--model_base_path={model_base_path}",
                                 "--file_system_poll_wait_seconds=0", *server_flags, rest=False)
  try:
    with serving_client.channel(server.address) as channel:
      server.wait_until_available(model_name, channel, timeout=300)
  except BaseException:
    server.stop()
    raise
  return server


def benchmark_index(index: str, saved_model_dir: str, batches: Dict[int, List[np.ndarray]],
                    clients: List[int], log_dir: str) -> List[Dict[str, Any]]:
  from serving import testing  # pylint: disable=g-import-not-at-top
  if index == "scann":
    import scann  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  local = in_process(saved_model_dir, batches, FLAGS.in_process_seconds)
  for batch_size, values in local.items():
    print(f"{index} in-process batch {batch_size}: p50 {values['p50_ms']:.3f} ms, "
          f"p99 {values['p99_ms']:.3f} ms ({values['calls']} calls); session_embedding only: "
          f"p50 {values['embedding_p50_ms']:.3f} ms", flush=True)
  model_name = os.path.basename(os.path.dirname(saved_model_dir))
  rows = []
  for batching in FLAGS.server_batching:
    server = start_server(os.path.dirname(saved_model_dir), model_name, log_dir,
                          *BATCHING_FLAGS[batching])
    try:
      for batch_size, inputs in batches.items():
        requests = [testing.predict_request(model_name, batch) for batch in inputs]
        for num_clients in clients:
          result = load_test(server.address, model_name, requests, num_clients,
                             FLAGS.duration_seconds)
          row = {"index": index, "batching": batching, "batch_size": batch_size,
                 "clients": num_clients, "in_process_p50_ms": local[batch_size]["p50_ms"],
                 "in_process_p99_ms": local[batch_size]["p99_ms"],
                 "in_process_embedding_p50_ms": local[batch_size]["embedding_p50_ms"],
                 **result, "load_average_1min": os.getloadavg()[0]}
          rows.append(row)
          print(f"{index} batching {batching} batch {batch_size} clients {num_clients}: p50 "
                f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                f"{result['requests_per_second']:.0f} req/s, "
                f"{result['sessions_per_second']:.0f} sessions/s, failures {result['failures']}",
                flush=True)
    finally:
      code = server.stop()
      logging.info("server of %s (batching %s) stopped with exit code %s", index, batching, code)
  one_client = {(r["batching"], r["batch_size"]): r["p50_ms"] for r in rows
                if r["clients"] == min(clients)}
  for row in rows:
    row["server_overhead_p50_ratio"] = (one_client[row["batching"], row["batch_size"]] /
                                        row["in_process_p50_ms"])
  return rows


def add_floor(rows: List[Dict[str, Any]], floors: Dict[int, Dict[str, float]]) -> None:
  """Adds each row's brute-force floor, the in-process latency's ratio to it, and the exact
  search's time with the table `[N, dim]` (TFRS's layout) and `[dim, N]` (`topk.BruteForce`'s)."""
  for row in rows:
    floor = floors[row["batch_size"]]
    row["brute_force_floor_p50_ms"] = floor["floor"]
    row["in_process_over_floor"] = row["in_process_p50_ms"] / floor["floor"]
    row["exact_search_n_by_d_p50_ms"] = floor["n_by_d"]
    row["exact_search_d_by_n_p50_ms"] = floor["d_by_n"]


def environment_lines(env: Dict[str, Any], load_average_start: float) -> List[str]:
  """A report's lines on the command and the machine (`env`: `common.environment()` at the end)."""
  return [
      f"Command: `{env['command']}`", "",
      f"Date {env['date']}, CPU {env['cpu']}, {env['threads']} hardware threads, load average "
      f"(1 min) {load_average_start:.2f} at the start and {env['load_average_1min']:.2f} "
      "at the end."]


def write_report(output: str, rows: List[Dict[str, Any]], env: Dict[str, Any],
                 info: Dict[str, Any]) -> None:
  lines = [
      "# Serving benchmark: gRPC (`serving.server`) against in-process calls", "",
      *environment_lines(env, info["load_average_start"]), "",
      f"Model: `{info['run_dir']}` ({info['dataset']}, {info['num_items']:,} items, top-20 "
      f"`serving_default`). Requests: the first {info['num_sessions']} test sessions (their last "
      f"{info['max_length']} items, raw ids), grouped into batches, sent round robin. "
      f"{FLAGS.duration_seconds:g} s per cell.", "",
      "In-process: the exported SavedModel loaded in the benchmark process, one "
      "`serving_default` call (median and p99). Server: `python -m serving.server` (Python gRPC, "
      "default 16 threads) in a subprocess on 127.0.0.1, N client threads in the benchmark "
      "process, each with its own channel; latency is per `Predict` call as seen by the client. "
      "**The server, the Python clients and the rest of the machine share the same "
      f"{env['threads']} cores**, so with many clients the client threads compete with the "
      "server for CPU (and the GIL of the client process); throughput is a lower bound for a "
      "server with dedicated cores. Overhead = p50(server, 1 client) / p50(in-process). "
      "The in-process figure is the whole `serving_default` call (query tower + top-20 index + "
      "id mapping); `embedding p50` is the `session_embedding` signature alone (query tower "
      "only), so their difference is about the index's share. Floor = exact top-20 of a "
      "random table of the same shape, `top_k(matmul)` alone (faster of native and XLA): for "
      "small batches it is the time to read the float32 table from memory, which bounds any "
      "brute-force search. Load = 1-minute load average right after the cell.", "",
      f"Targets (issue 6, point 7): {TARGETS}.", "",
      "| index | batching | batch | clients | in-process p50 ms | in-process p99 ms | "
      "embedding p50 ms | floor p50 ms | in-process / floor | gRPC p50 ms | gRPC p99 ms | "
      "requests/s | sessions/s | failures | overhead (p50 ratio) | load |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['index']} | {r['batching']} | {r['batch_size']} | {r['clients']} | "
        f"{r['in_process_p50_ms']:.3f} | "
        f"{r['in_process_p99_ms']:.3f} | {r['in_process_embedding_p50_ms']:.3f} | "
        f"{r['brute_force_floor_p50_ms']:.3f} | {r['in_process_over_floor']:.2f} | "
        f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
        f"{r['requests_per_second']:,.0f} | {r['sessions_per_second']:,.0f} | {r['failures']} | "
        f"{r['server_overhead_p50_ratio']:.1f}x | {r['load_average_1min']:.1f} |")
  lines += ["", "## Against the targets", ""]
  for check in info["targets"]:
    lines.append(f"- {check}")
  lines.append("")
  with atomic_output(output + ".md") as temporary:
    with open(temporary, "w") as out:
      out.write("\n".join(lines))
  with atomic_output(output + ".json") as temporary:
    with open(temporary, "w") as out:
      json.dump({"environment": env, "info": info, "results": rows}, out, indent=1)


def target_checks(rows: List[Dict[str, Any]]) -> List[str]:
  """The issue's serving targets against the rows: each server setting of each index."""
  checks = []
  for r in rows:
    if r["index"] == "brute_force" and r["batch_size"] == 1:
      value = r["in_process_p50_ms"]
      checks.append(f"in-process batch-1 top-20, brute force: p50 {value:.3f} ms "
                    f"({'met' if value < 1 else 'NOT met'}: < 1 ms)")
      break
  for index, batching in dict.fromkeys((r["index"], r["batching"]) for r in rows):
    setting = [r for r in rows if r["index"] == index and r["batching"] == batching and
               r["batch_size"] == 1]
    name = f"{index} (batching {batching}), batch 1"
    r = next((r for r in setting if r["clients"] == 8), None)
    if r:
      met = r["p50_ms"] < 3 and r["p99_ms"] < 15
      checks.append(f"{name}, 8 clients: gRPC p50 {r['p50_ms']:.2f} ms, p99 "
                    f"{r['p99_ms']:.2f} ms ({'met' if met else 'NOT met'}: p50 < 3, p99 < 15)")
    best = max(setting, key=lambda x: x["requests_per_second"], default=None)
    if best:
      value = best["requests_per_second"]
      checks.append(f"{name}: best {value:,.0f} requests/s ({best['clients']} clients; "
                    f"{'met' if value >= 1000 else 'NOT met'}: >= 1,000)")
  return checks


def _define_flags() -> None:
  """The flags of the command line (defined when run, so other benchmarks can import this)."""
  flags.DEFINE_string("run_dir", None, "Run folder of a trained (Gowalla) model.")
  flags.DEFINE_string("export_dir", None, "Export base folder to use or fill; default: a temporary "
                      "folder, deleted at the end.")
  flags.DEFINE_list("indexes", ["brute_force", "scann", "portable_ann"],
                    "Indexes to export and serve.")
  flags.DEFINE_list("clients", ["1", "8", "32"], "Numbers of concurrent gRPC clients.")
  flags.DEFINE_list("server_batching", ["off", "on"], "Server settings to measure: without and "
                    "with server-side batching (`--enable_batching`), each its own server.")
  flags.DEFINE_list("batch_sizes", ["1", "64"], "Sessions per request.")
  flags.DEFINE_float("duration_seconds", 5.0, "Duration of each (batch size, clients) cell.")
  flags.DEFINE_float("in_process_seconds", 3.0, "Time spent timing each in-process batch size.")
  flags.DEFINE_integer("num_sessions", 2048, "Test sessions sampled for the requests.")
  flags.DEFINE_string("output", os.path.join(common.RESULTS_DIR, "serving_benchmark"),
                      "Output path without extension.")
  flags.mark_flag_as_required("run_dir")


def main(argv: List[str]) -> int:
  del argv
  from trainer import export  # pylint: disable=g-import-not-at-top
  from trainer.run_dir import load_trained_model  # pylint: disable=g-import-not-at-top
  load_start = os.getloadavg()[0]
  clients = [int(c) for c in FLAGS.clients]
  batch_sizes = [int(b) for b in FLAGS.batch_sizes]
  model, prepared, config = load_trained_model(FLAGS.run_dir)
  raw_ids = export.raw_id_array(prepared)
  sessions = test_sessions(prepared, raw_ids, FLAGS.num_sessions, config.train.max_length)
  batches = {b: make_batches(sessions, b) for b in batch_sizes}
  export_base = FLAGS.export_dir or tempfile.mkdtemp(prefix="serving_benchmark_")
  log_dir = tempfile.mkdtemp(prefix="serving_benchmark_logs_")
  rows = []
  try:
    paths = {index: ensure_export(model, prepared, config, export_base, index)
             for index in FLAGS.indexes}
    for index in FLAGS.indexes:
      rows += benchmark_index(index, paths[index], batches, clients, log_dir)
    add_floor(rows, brute_force_floor(model.num_items, config.model.embedding_dim, batch_sizes,
                                      FLAGS.in_process_seconds))
  finally:
    if not FLAGS.export_dir:
      shutil.rmtree(export_base, ignore_errors=True)
  info = {"run_dir": FLAGS.run_dir, "dataset": prepared.name, "num_items": model.num_items,
          "num_sessions": len(sessions), "max_length": config.train.max_length,
          "duration_seconds": FLAGS.duration_seconds, "load_average_start": load_start,
          "server_logs": log_dir}
  info["targets"] = target_checks(rows)
  env = common.environment()
  env["command"] = "python -m benchmarks.serving " + " ".join(sys.argv[1:])
  write_report(FLAGS.output, rows, env, info)
  common.record("serving", [{k: v for k, v in r.items() if k != "errors"} for r in rows])
  print("\n".join(info["targets"]))
  print(f"written to {FLAGS.output}.md and .json")
  failures = sum(r["failures"] for r in rows)
  if failures:
    print(f"{failures} requests failed", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  _define_flags()
  app.run(main)
