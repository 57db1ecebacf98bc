r"""Soak test of the gRPC server: many clients for a while, no failed request, no memory growth.

    python -m benchmarks.soak [--export=runs/gowalla-1epoch/export/attenmixer]
        [--prepared_dir=prepared/gowalla] [--clients=32] [--duration_seconds=60]
        [--baseline_requests=10000] [--leak_requests=100000] [--rss_tolerance=0.10]
        [--output=results/soak]

Issue #8, points 4 and 8. Starts `python -m serving.server` on `--export` (a model base path of
integer version folders, served under the folder's name) on a free port of 127.0.0.1 and sends
it batch-1 `Predict` requests (the first `--num_sessions` test sessions of `--prepared_dir`,
their last `--max_length` items as raw ids, round robin) from `--clients` threads, each with its
own gRPC channel (`benchmarks.serving.load_test`), in three phases:

1. `--baseline_requests` requests, then the server's resident memory (VmRSS in
   /proc/<pid>/status) is read: the baseline;
2. `--duration_seconds` of load: p50 and p99 latency (per `Predict`, as the client sees it) and
   requests/s;
3. more requests until `--leak_requests` were sent in all, then the resident memory again.

(Each phase also sends one untimed request per client to connect its channel.) Criteria: no
request fails; after the load the server answers the first request as it did before the load;
resident memory after the load <= (1 + `--rss_tolerance`) x the baseline. Prints a summary, writes
`<output>.md` and the `results/benchmarks.json` entry `soak`, and exits with 1 if a criterion
fails. The server, the client threads and the rest of the machine share its cores.
"""

import os
import sys
import tempfile
import time
from typing import Any, Dict, List

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

from absl import app
from absl import flags
from absl import logging
import numpy as np
from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks import common
from benchmarks import serving as serving_benchmark
from data.atomic import atomic_output

FLAGS = flags.FLAGS

MB = 1 << 20


def resident_bytes(pid: int) -> int:
  """The resident memory (VmRSS) of process `pid`, in bytes."""
  resident = common.proc_bytes(f"/proc/{pid}/status", "VmRSS")
  if resident is None:
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status: is {pid} a zombie?")
  return resident


def session_requests(prepared_dir: str, model_name: str, count: int,
                     max_length: int) -> List[Any]:
  """Batch-1 `PredictRequest`s for `serving_default`: the first `count` test sessions."""
  # pylint: disable=g-import-not-at-top  (TensorFlow only when requests are built)
  from data.prepared import PreparedDataset
  from serving import testing
  from trainer import export
  prepared = PreparedDataset.load(prepared_dir, verify=False)
  sessions = serving_benchmark.test_sessions(prepared, export.raw_id_array(prepared), count,
                                             max_length)
  return [testing.predict_request(model_name, batch)
          for batch in serving_benchmark.make_batches(sessions, 1)]


def _answer(address: str, request) -> Dict[str, np.ndarray]:
  """The outputs of one `Predict` call, as numpy arrays."""
  # pylint: disable=g-import-not-at-top  (serving.client defines flags: import it once parsed)
  from serving import client as serving_client
  from serving import tensors
  with serving_client.channel(address) as channel:
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request,
                                                                                  timeout=30)
  return {name: tensors.to_ndarray(value, name) for name, value in response.outputs.items()}


def _same_answer(before: Dict[str, np.ndarray], after: Dict[str, np.ndarray]) -> bool:
  """Same output names and shapes, and values equal up to float rounding."""
  return before.keys() == after.keys() and all(
      before[name].shape == after[name].shape and np.allclose(before[name], after[name])
      for name in before)


def soak(server, requests: List[Any], clients: int, duration_seconds: float,
         baseline_requests: int, leak_requests: int, rss_tolerance: float) -> Dict[str, Any]:
  """Runs the three phases (module docstring) against `server`, a `serving.testing.ServerProcess`.

  Returns:
    The figures (latency and throughput of the timed phase, failures and requests of all phases,
    resident memory) with the criteria (`no_failures`, `same_answer`, `rss_within_tolerance`)
    and `passed`, and under `phases` each phase's figures.
  """
  if not 0 < baseline_requests < leak_requests:
    raise ValueError(f"need 0 < baseline_requests ({baseline_requests}) < leak_requests "
                     f"({leak_requests})")
  pid = server.process.pid
  before = _answer(server.address, requests[0])
  phases = []
  sent = 0

  def phase(name, **stop):
    nonlocal sent
    result = serving_benchmark.load_test(server.address, requests[0].model_spec.name, requests,
                                         clients, **stop)
    sent += result["requests"] + result["failures"]
    result.update(phase=name, total_requests=sent, rss_mb=resident_bytes(pid) / MB)
    logging.info("%s: %d requests (%d failed), %d in all, p50 %.2f ms, p99 %.2f ms, %.0f req/s, "
                 "server RSS %.1f MB", name, result["requests"], result["failures"], sent,
                 result["p50_ms"], result["p99_ms"], result["requests_per_second"],
                 result["rss_mb"])
    phases.append(result)
    return result

  started = time.perf_counter()
  rss_start_mb = resident_bytes(pid) / MB
  baseline = phase("baseline", max_requests=baseline_requests)
  timed = phase("timed", seconds=duration_seconds)
  final = (phase("leak", max_requests=leak_requests - sent) if sent < leak_requests else timed)
  failures = sum(p["failures"] for p in phases)
  same_answer = _same_answer(before, _answer(server.address, requests[0]))
  rss_ratio = final["rss_mb"] / baseline["rss_mb"]
  criteria = {"no_failures": failures == 0, "same_answer": same_answer,
              "rss_within_tolerance": rss_ratio <= 1 + rss_tolerance}
  return {
      "clients": clients, "duration_seconds": duration_seconds,
      "requests": timed["requests"], "p50_ms": timed["p50_ms"], "p99_ms": timed["p99_ms"],
      "requests_per_second": timed["requests_per_second"],
      "total_requests": sent, "failures": failures,
      "errors": [e for p in phases for e in p["errors"]][:3],
      "rss_start_mb": rss_start_mb,
      "baseline_requests": baseline["total_requests"], "rss_baseline_mb": baseline["rss_mb"],
      "leak_requests": final["total_requests"], "rss_after_mb": final["rss_mb"],
      "rss_ratio": rss_ratio, "rss_tolerance": rss_tolerance,
      **criteria, "passed": all(criteria.values()),
      "soak_seconds": time.perf_counter() - started,
      "phases": [{k: v for k, v in p.items() if k != "errors"} for p in phases],
  }


def _verdict(ok: bool) -> str:
  return "PASS" if ok else "FAIL"


def summary(result: Dict[str, Any]) -> List[str]:
  """One line a criterion, with its figures."""
  return [
      f"{_verdict(result['no_failures'])}: {result['failures']} failed of "
      f"{result['total_requests']:,} requests ({result['clients']} clients); timed "
      f"{result['duration_seconds']:g} s: {result['requests']:,} requests, p50 "
      f"{result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
      f"{result['requests_per_second']:,.0f} requests/s",
      f"{_verdict(result['same_answer'])}: the server answers the first request after the load "
      "as before it",
      f"{_verdict(result['rss_within_tolerance'])}: server resident memory "
      f"{result['rss_after_mb']:,.1f} MB after {result['leak_requests']:,} requests = "
      f"{result['rss_ratio']:.3f} x {result['rss_baseline_mb']:,.1f} MB after "
      f"{result['baseline_requests']:,} (allowed: <= {1 + result['rss_tolerance']:.2f} x; "
      f"{result['rss_start_mb']:,.1f} MB before the load)",
  ]


def write_report(output: str, result: Dict[str, Any], env: Dict[str, Any],
                 info: Dict[str, Any]) -> None:
  """`<output>.md`: command, environment, criteria and the figures of each phase."""
  lines = [
      "# Soak test of the gRPC server (issue #8, points 4 and 8)", "",
      *serving_benchmark.environment_lines(env, info["load_average_start"]),
      f"The server, the {result['clients']} client threads (one process, each with its own "
      "channel) and the rest of the machine share these cores.", "",
      f"Model: `{info['export']}` served as `{info['model_name']}` by `python -m "
      f"serving.server` (server log: `{info['server_log']}`). Requests: `serving_default`, "
      f"batch 1, the first {info['num_sessions']:,} test sessions of `{info['prepared_dir']}` "
      f"(their last {info['max_length']} items, raw ids), round robin. Resident memory: VmRSS "
      f"of the server process. Took {result['soak_seconds']:.0f} s.", "",
      f"Result: **{_verdict(result['passed'])}**", ""]
  lines += [f"- {line}" for line in summary(result)]
  lines += ["", "| phase | requests | failures | requests in all | p50 ms | p99 ms | requests/s "
            "| server RSS MB |", "|---|---|---|---|---|---|---|---|"]
  for p in result["phases"]:
    lines.append(f"| {p['phase']} | {p['requests']:,} | {p['failures']} | "
                 f"{p['total_requests']:,} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | "
                 f"{p['requests_per_second']:,.0f} | {p['rss_mb']:,.1f} |")
  if result["errors"]:
    lines += ["", "First errors: " + "; ".join(f"`{e}`" for e in result["errors"])]
  lines.append("")
  with atomic_output(output + ".md") as temporary:
    with open(temporary, "w") as out:
      out.write("\n".join(lines))


def _define_flags() -> None:
  """The flags of the command line (defined when run, so tests can import this module)."""
  flags.DEFINE_string("export", "runs/gowalla-1epoch/export/attenmixer",
                      "Model base path: a folder of integer version folders (serving.export).")
  flags.DEFINE_string("prepared_dir", "prepared/gowalla", "Prepared dataset whose test sessions "
                      "are the requests.")
  flags.DEFINE_integer("num_sessions", 2048, "Test sessions sent, round robin.")
  flags.DEFINE_integer("max_length", 20, "Most recent items of a session sent (the training "
                       "max_length).")
  flags.DEFINE_integer("clients", 32, "Concurrent gRPC clients.")
  flags.DEFINE_float("duration_seconds", 60.0, "Duration of the timed phase.")
  flags.DEFINE_integer("baseline_requests", 10000, "Requests before the baseline resident memory.")
  flags.DEFINE_integer("leak_requests", 100000, "Requests in all before the second reading of the "
                       "resident memory.")
  flags.DEFINE_float("rss_tolerance", 0.10, "Largest allowed growth of the resident memory, as a "
                     "fraction of the baseline.")
  flags.DEFINE_string("output", os.path.join(common.RESULTS_DIR, "soak"),
                      "Report path without extension (`.md` is added).")


def main(argv: List[str]) -> int:
  del argv
  load_start = os.getloadavg()[0]
  model_name = os.path.basename(os.path.normpath(FLAGS.export))
  requests = session_requests(FLAGS.prepared_dir, model_name, FLAGS.num_sessions,
                              FLAGS.max_length)
  log_dir = tempfile.mkdtemp(prefix="soak_logs_")
  server = serving_benchmark.start_server(FLAGS.export, model_name, log_dir)
  try:
    result = soak(server, requests, FLAGS.clients, FLAGS.duration_seconds,
                  FLAGS.baseline_requests, FLAGS.leak_requests, FLAGS.rss_tolerance)
  finally:
    logging.info("server stopped with exit code %s", server.stop())
  info = {"export": FLAGS.export, "model_name": model_name, "prepared_dir": FLAGS.prepared_dir,
          "num_sessions": len(requests), "max_length": FLAGS.max_length,
          "server_log": server.log_path, "load_average_start": load_start}
  env = common.environment()
  write_report(FLAGS.output, result, env, info)
  common.record("soak", {**info, **result})
  print("\n".join(summary(result)))
  print(f"written to {FLAGS.output}.md")
  if not result["passed"]:
    print("soak test failed", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  _define_flags()
  app.run(main)
