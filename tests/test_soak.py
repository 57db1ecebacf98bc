"""The soak test of the server, short (issue #8, points 4 and 8): `benchmarks.soak` on toy versions.

The full load, `python -m benchmarks.soak` (32 clients for 60 s on the Gowalla export, resident
memory after 100,000 requests against that after 10,000), takes minutes; here the same code
(`soak.soak`, `soak.session_requests`, `soak.write_report`, and `benchmarks.serving`'s
`start_server` and `load_test`) runs 32 clients for a few seconds against a toy version of
`serving.testing`, with the server's memory read after 2,000 and after 10,000 requests. A second
toy version keeps 64 KB a request in a hash table: the memory check must catch that leak.

Tolerance: a healthy toy server (about 570 MB resident, mostly TensorFlow) grows by less than
1 MB from 2,000 to 10,000 requests, so 5 % (about 28 MB) of headroom leaves room for the
allocator's noise and still catches a leak of more than about 3.5 KB a request (the leaky
version keeps 64 KB, 500 MB over 8,000 requests; here 160 MB over 2,500).
"""

import numpy as np
import pytest

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks import common
from benchmarks import serving as serving_benchmark
from benchmarks import soak
from serving import client
from serving import tensors
from serving import testing

MODEL = "toy"
CLIENTS = 32
RSS_TOLERANCE = 0.05
LEAK_FLOATS = 16384  # 64 KB kept a request by the leaky version


class _LeakyToy(testing.ToyRecommender):
  """A toy version whose serving_default keeps LEAK_FLOATS floats a request: a memory leak."""

  def __init__(self, version):
    super().__init__(version)
    self.kept = tf.lookup.experimental.MutableHashTable(tf.int64, tf.float32,
                                                       tf.zeros([LEAK_FLOATS]))

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="sessions")])
  def serving_default(self, sessions):
    key = tf.random.uniform([1], maxval=tf.int64.max, dtype=tf.int64)
    self.kept.insert(key, tf.ones([1, LEAK_FLOATS]))
    return self._top_k(sessions, testing.DEFAULT_K)


@pytest.fixture(scope="module")
def requests(synthetic_prepared):
  """Batch-1 requests: test sessions of the synthetic dataset (ids above 40 are unknown items)."""
  return soak.session_requests(synthetic_prepared.directory, MODEL, 256, max_length=20)


def _serve(module, folder):
  """A server (`benchmarks.serving.start_server`) of `module` as version 1 of MODEL."""
  base_path = str(folder / MODEL)
  testing.save_version(module, module.signatures(), base_path, 1, ((1, 2, 0), (3, 4, 5)))
  return serving_benchmark.start_server(base_path, MODEL, str(folder))


def test_soak_passes_and_the_server_still_answers(tmp_path, requests):
  server = _serve(testing.ToyRecommender(1), tmp_path)
  sessions = [[1, 2, 3], [40, 39, 38], [7, 0, 0]]
  try:
    result = soak.soak(server, requests, CLIENTS, duration_seconds=3, baseline_requests=2000,
                       leak_requests=10000, rss_tolerance=RSS_TOLERANCE)
    with client.channel(server.address) as channel:
      response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
          testing.predict_request(MODEL, sessions), timeout=30)
    assert server.process.poll() is None, server.log()
  finally:
    server.stop()
  expected = testing.toy_reference(1, sessions)
  for name in ("item_ids", "scores", "unknown_items"):
    np.testing.assert_array_equal(tensors.to_ndarray(response.outputs[name], name),
                                  expected[name])
  lines = soak.summary(result)
  assert result["passed"], lines
  assert result["failures"] == 0 and not result["errors"]
  assert [p["phase"] for p in result["phases"]] == ["baseline", "timed", "leak"]
  assert result["baseline_requests"] == 2000
  assert result["leak_requests"] == result["total_requests"] >= 10000
  assert result["requests"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
  assert result["requests_per_second"] > 0
  assert result["rss_ratio"] <= 1 + RSS_TOLERANCE, lines

  info = {"export": str(tmp_path / MODEL), "model_name": MODEL, "prepared_dir": "synthetic",
          "num_sessions": len(requests), "max_length": 20, "server_log": server.log_path,
          "load_average_start": 0.0}
  soak.write_report(str(tmp_path / "soak"), result, common.environment(), info)
  report = (tmp_path / "soak.md").read_text()
  assert "Result: **PASS**" in report and "FAIL" not in report
  assert all(f"- {line}" in report for line in lines)


def test_soak_catches_a_memory_leak(tmp_path, requests):
  server = _serve(_LeakyToy(1), tmp_path)
  try:
    result = soak.soak(server, requests, CLIENTS, duration_seconds=1, baseline_requests=500,
                       leak_requests=3000, rss_tolerance=RSS_TOLERANCE)
  finally:
    server.stop()
  assert result["no_failures"] and result["same_answer"]
  assert not result["rss_within_tolerance"] and not result["passed"], soak.summary(result)
  # at least half of the 64 KB a request shows in the resident memory
  growth_mb = result["rss_after_mb"] - result["rss_baseline_mb"]
  assert growth_mb > 0.5 * (result["leak_requests"] - result["baseline_requests"]) * 64 / 1024
  assert any(line.startswith("FAIL: server resident memory") for line in soak.summary(result))
