"""Test support for the server: a toy SavedModel with the export's signatures, and a server process.

`write_toy_version` saves, in a second, a SavedModel whose signatures have the names, inputs and
outputs of the real export (`serving_default`, `top_k`, `session_embedding`, `score_items`), so the
server can be exercised without training. Its item table has small integer entries, so
`toy_reference` reproduces every output exactly in numpy (ties go to the lower item id, as in
`tf.math.top_k`), and each version has its own table, so an answer shows which version gave it.

`ServerProcess` runs `python -m serving.server` in a subprocess on free ports of 127.0.0.1.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2

from data import warmup
from serving import tensors

NUM_ITEMS = 40
DIM = 4
DEFAULT_K = 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toy_table(version):
  """The item table of toy version `version`: [NUM_ITEMS + 1, DIM] small integers, row 0 zero."""
  table = np.random.default_rng(version).integers(-3, 4, size=(NUM_ITEMS + 1, DIM))
  table[0] = 0
  return table.astype(np.float32)


class ToyRecommender(tf.Module):
  """Scores items by the dot product of their row with the sum of the session's rows.

  Ids outside 1..NUM_ITEMS are ignored and counted in `unknown_items`; 0 is padding.
  """

  def __init__(self, version):
    super().__init__()
    self.table = tf.Variable(toy_table(version))

  def _session(self, sessions):
    """([batch, DIM] session vectors, [batch] int32 counts of unknown ids)."""
    known = (sessions > 0) & (sessions <= NUM_ITEMS)
    unknown = tf.reduce_sum(tf.cast((sessions != 0) & ~known, tf.int32), axis=1)
    rows = tf.gather(self.table, tf.where(known, sessions, tf.zeros_like(sessions)))
    return tf.reduce_sum(rows, axis=1), unknown

  def _top_k(self, sessions, k):
    with tf.control_dependencies([tf.debugging.assert_positive(k, message="k must be >= 1")]):
      k = tf.identity(k)  # the check runs before any op that takes k
    vectors, unknown = self._session(sessions)
    scores, indices = tf.math.top_k(tf.matmul(vectors, self.table[1:], transpose_b=True), k)
    return {"item_ids": tf.cast(indices, tf.int64) + 1, "scores": scores,
            "unknown_items": unknown}

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="sessions")])
  def serving_default(self, sessions):
    return self._top_k(sessions, DEFAULT_K)

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="sessions"),
                                tf.TensorSpec([], tf.int32, name="k")])
  def top_k(self, sessions, k):
    return self._top_k(sessions, k)

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="sessions")])
  def session_embedding(self, sessions):
    return {"embedding": self._session(sessions)[0]}

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name="sessions"),
                                tf.TensorSpec([None, None], tf.int64, name="candidates")])
  def score_items(self, sessions, candidates):
    vectors, _ = self._session(sessions)
    known = (candidates > 0) & (candidates <= NUM_ITEMS)
    rows = tf.gather(self.table, tf.where(known, candidates, tf.zeros_like(candidates)))
    return {"scores": tf.reduce_sum(rows * vectors[:, tf.newaxis, :], axis=2)}

  def signatures(self):
    return {"serving_default": self.serving_default, "top_k": self.top_k,
            "session_embedding": self.session_embedding, "score_items": self.score_items}


def toy_reference(version, sessions, k=DEFAULT_K):
  """The toy version's `top_k` outputs for `sessions` [batch, length], computed in numpy."""
  table = toy_table(version)
  sessions = np.asarray(sessions, dtype=np.int64)
  known = (sessions > 0) & (sessions <= NUM_ITEMS)
  vectors = table[np.where(known, sessions, 0)].sum(axis=1)
  scores = vectors @ table[1:].T
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return {"item_ids": order.astype(np.int64) + 1,
          "scores": np.take_along_axis(scores, order, axis=1).astype(np.float32),
          "unknown_items": ((sessions != 0) & ~known).sum(axis=1).astype(np.int32)}


def predict_request(model_name, sessions, signature_name="", **extra_inputs):
  """A PredictRequest with `sessions` (int64) and other inputs given as numpy arrays."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  request.inputs["sessions"].CopyFrom(
      tensors.from_ndarray(np.asarray(sessions, dtype=np.int64)))
  for alias, value in extra_inputs.items():
    request.inputs[alias].CopyFrom(tensors.from_ndarray(np.asarray(value)))
  return request


def save_version(module, signatures, base_path, version, warmup_sessions=None):
  """Saves `module` as `<base_path>/<version>` (written aside, then renamed into place).

  warmup_sessions: int64 [batch, length]; if given, the version gets the export's warm-up
    requests (serving_default on these sessions).
  """
  os.makedirs(base_path, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=".tmp-%d-" % version, dir=base_path)
  os.chmod(staging, 0o755)
  tf.saved_model.save(module, staging, signatures=signatures)
  if warmup_sessions is not None:
    warmup.write_warmup_requests(staging, "toy", np.asarray(warmup_sessions, np.int64))
  final = os.path.join(base_path, str(version))
  os.rename(staging, final)
  return final


def write_toy_version(base_path, version, warmup_sessions=((1, 2, 0), (3, 4, 5))):
  """Saves toy version `version` under `base_path`, by default with warm-up requests."""
  module = ToyRecommender(version)
  return save_version(module, module.signatures(), base_path, version, warmup_sessions)


def free_port():
  """A TCP port of 127.0.0.1 that was free a moment ago."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


class ServerProcess:
  """`python -m serving.server FLAGS` in a subprocess, its log in a file of `log_dir`."""

  def __init__(self, log_dir, *flags, rest=True):
    self.port = free_port()
    self.rest_port = free_port() if rest else 0
    self.address = "127.0.0.1:%d" % self.port
    self.log_path = os.path.join(log_dir, "server-%d.log" % self.port)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, "-m", "serving.server", "--port=%d" % self.port,
               "--rest_api_port=%d" % self.rest_port, *flags]
    with open(self.log_path, "wb") as log:
      self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      cwd=ROOT)

  def log(self):
    with open(self.log_path, encoding="utf-8", errors="replace") as stream:
      return stream.read()

  def wait_until_available(self, model_name, channel, timeout=120):
    """Waits until `model_name` has an AVAILABLE version; raises with the log if not."""
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model_name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        raise RuntimeError("the server exited with %d:\n%s" % (self.process.returncode,
                                                               self.log()))
      try:
        response = stub.GetModelStatus(request, timeout=2)
        if any(status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
               for status in response.model_version_status):
          return response
      except grpc.RpcError:
        pass
      time.sleep(0.2)
    raise RuntimeError("no version of %s became available in %ds:\n%s" % (
        model_name, timeout, self.log()))

  def stop(self, signum=signal.SIGTERM, timeout=60):
    """Sends `signum` and waits; returns the exit code."""
    if self.process.poll() is None:
      self.process.send_signal(signum)
      try:
        self.process.wait(timeout)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    return self.process.returncode
