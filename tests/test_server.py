"""The TF Serving-compatible server end to end: a real server process, queried over gRPC and REST.

A server (module fixture) serves toy SavedModels with the export's signatures (`serving.testing`),
the newest version only; the tests query it, swap in a new version while client threads send
requests, feed it broken versions, send each kind of bad request, and stop it with SIGTERM. The
tests run in file order and share that server; `Server.serving_version` is the version that should
answer. A second server, deployment-like, is configured by a model config file (the toy with a
version label, and the real portable and ScaNN exports of trainer.export) and uses TLS with client
certificates.
"""

import http.client
import json
import os
import shutil
import ssl
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from conftest import ROOT, run_module
from data import warmup
from serving import client
from serving import model_config
from serving import tensors
from serving import testing

MODEL = "toy"
SESSIONS = [[1, 2, 3], [4, 0, 0], [40, 39, 38]]
State = get_model_status_pb2.ModelVersionStatus.State
Code = grpc.StatusCode


class _FloatSessions(testing.ToyRecommender):
  """A version whose serving_default takes float32 sessions: an incompatible signature."""

  @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="sessions")])
  def serving_default(self, sessions):
    return self._top_k(tf.cast(sessions, tf.int64), testing.DEFAULT_K)


def _copy_of(source, target, edit):
  shutil.copytree(source, target)
  edit(target)
  return target


def _truncate_saved_model(path):
  saved_model = os.path.join(path, "saved_model.pb")
  with open(saved_model, "r+b") as stream:
    stream.truncate(os.path.getsize(saved_model) // 2)


def _bad_warmup(path):
  """Warm-up requests calling top_k without its `k`."""
  warmup.write_warmup_requests(path, MODEL, np.array([[1, 2]], np.int64), signature_name="top_k")


# Broken versions: (name, version number, expected status code, text expected in the reason).
BROKEN = [
    ("missing_variables", 3, Code.NOT_FOUND, "variables"),
    ("truncated_files", 4, Code.DATA_LOSS, "saved_model.pb"),
    ("wrong_signature", 5, Code.FAILED_PRECONDITION, "sessions"),
    ("failing_warmup", 6, Code.INVALID_ARGUMENT, "warm-up request 1"),
]
NEXT_GOOD_VERSION = 9


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
  """Version folders written aside (`<name>/<version>`), for the tests to rename into place."""
  root = tmp_path_factory.mktemp("staged")
  good = {version: testing.write_toy_version(str(root / "good"), version)
          for version in (1, 2, NEXT_GOOD_VERSION)}
  broken = {
      "missing_variables": _copy_of(good[1], str(root / "missing_variables"),
                                    lambda path: shutil.rmtree(os.path.join(path, "variables"))),
      "truncated_files": _copy_of(good[1], str(root / "truncated_files"), _truncate_saved_model),
      "failing_warmup": _copy_of(good[1], str(root / "failing_warmup"), _bad_warmup),
  }
  module = _FloatSessions(5)
  broken["wrong_signature"] = testing.save_version(module, module.signatures(),
                                                   str(root / "wrong"), 5)
  shutil.copytree(root / "good", root / "pristine")
  return {"good": good, "broken": broken, "pristine": str(root / "pristine")}


class Server:
  """The module's server process (serving the newest version only), and its gRPC stubs."""

  def __init__(self, process, base_path):
    self.process = process
    self.base_path = base_path
    self.channel = grpc.insecure_channel(process.address)
    self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel).Predict
    self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
    self.serving_version = None  # the version that should be answering

  def add_version(self, folder, version):
    os.rename(folder, os.path.join(self.base_path, str(version)))

  def status(self, version=None):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    if version is not None:
      request.model_spec.version.value = version
    return self.models.GetModelStatus(request, timeout=10).model_version_status

  def wait_for_state(self, version, states, timeout=90):
    """The version's ModelVersionStatus once its state is in `states`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      try:
        (version_status,) = self.status(version)
        if version_status.state in states:
          return version_status
      except grpc.RpcError as error:
        assert error.code() == Code.NOT_FOUND, error
      time.sleep(0.1)
    raise AssertionError("version %d never reached %s:\n%s" % (version, states,
                                                              self.process.log()[-3000:]))

  def rest(self, method, path, body=None):
    """(HTTP status, JSON reply) of a REST call."""
    connection = http.client.HTTPConnection("127.0.0.1", self.process.rest_port, timeout=30)
    try:
      payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body)
      connection.request(method, path, body=payload)
      reply = connection.getresponse()
      return reply.status, json.loads(reply.read())
    finally:
      connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, staged):
  root = tmp_path_factory.mktemp("server")
  base_path = str(root / "models" / MODEL)
  os.makedirs(base_path)
  process = testing.ServerProcess(
      str(root), "--model_base_path=%s" % base_path, "--model_name=%s" % MODEL,
      "--version_labels=canary=2",
      "--file_system_poll_wait_seconds=0.2", "--max_batch_size=8", "--max_session_length=16")
  served = Server(process, base_path)
  served.add_version(staged["good"][1], 1)
  served.serving_version = 1
  try:
    process.wait_until_available(MODEL, served.channel)
    yield served
  finally:
    served.channel.close()
    process.stop()


def _outputs(response):
  return {alias: tensors.to_ndarray(proto, alias) for alias, proto in response.outputs.items()}


def _assert_matches_reference(response, sessions=SESSIONS, k=testing.DEFAULT_K):
  expected = testing.toy_reference(response.model_spec.version.value, sessions, k)
  outputs = _outputs(response)
  assert sorted(outputs) == sorted(expected)
  for alias, array in expected.items():
    np.testing.assert_array_equal(outputs[alias], array, err_msg=alias)
    assert outputs[alias].dtype == array.dtype, alias


def _code(call, *args):
  """The status code of a call that must fail (and its details)."""
  with pytest.raises(grpc.RpcError) as raised:
    call(*args, timeout=30)
  return raised.value.code(), raised.value.details()


# ---------------------------------------------------------------------------------------------
# In-process units: tensor conversion, the model config file, the client's request.


@pytest.mark.parametrize("use_tensor_content", [False, True])
@pytest.mark.parametrize("array", [np.array([[1, -2], [3, 2**40]], np.int64),
                                   np.array([0.5, -1.25], np.float32), np.int32(7),
                                   np.array([b"a", b"\xff"], object), np.zeros((2, 0), np.int64),
                                   np.array([True, False]), np.array([1.5], np.float16)])
def test_tensor_round_trip(array, use_tensor_content):
  if array.dtype == object and use_tensor_content:
    pytest.skip("strings always travel in string_val")
  proto = tensors.from_ndarray(array, use_tensor_content=use_tensor_content)
  decoded = tensors.to_ndarray(proto)
  np.testing.assert_array_equal(decoded, array)
  assert decoded.dtype == np.asarray(array).dtype
  np.testing.assert_array_equal(tf.make_ndarray(proto), array)


def test_single_typed_value_fills_the_tensor_as_in_tensorflow():
  proto = tensors.from_ndarray(np.array([[5]], np.int64))
  proto.tensor_shape.dim[1].size = 3
  np.testing.assert_array_equal(tensors.to_ndarray(proto), [[5, 5, 5]])


def test_repository_models_config_parses():
  configs = model_config.read_model_config_file(os.path.join(ROOT, "serving", "models.config"))
  assert configs and all(os.path.isabs(config.base_path) for config in configs)


@pytest.mark.parametrize("text", ["name: 'x'", "model_config_list { config { name: 'a' } }",
                                  "model_config_list { config { name: 'a' base_path: '/m' "
                                  "model_platform: 'pytorch' } }"])
def test_bad_models_config_is_refused_with_the_file_name(tmp_path, text):
  path = tmp_path / "models.config"
  path.write_text(text)
  with pytest.raises(ValueError, match="models.config"):
    model_config.read_model_config_file(str(path))


# ---------------------------------------------------------------------------------------------
# The served API, on version 1.


@pytest.mark.parametrize("use_tensor_content", [False, True])
def test_predict_serving_default(server, use_tensor_content):
  request = testing.predict_request(MODEL, SESSIONS)
  request.inputs["sessions"].CopyFrom(tensors.from_ndarray(
      np.array(SESSIONS, np.int64), use_tensor_content=use_tensor_content))
  response = server.predict(request, timeout=30)
  assert response.model_spec.name == MODEL
  assert response.model_spec.signature_name == "serving_default"
  assert response.model_spec.version.value == server.serving_version
  _assert_matches_reference(response)


def test_predict_other_signatures_and_output_filter(server):
  response = server.predict(testing.predict_request(MODEL, SESSIONS, "top_k", k=np.int32(7)),
                            timeout=30)
  assert response.model_spec.signature_name == "top_k"
  _assert_matches_reference(response, k=7)
  version = response.model_spec.version.value
  table = testing.toy_table(version)

  response = server.predict(testing.predict_request(MODEL, SESSIONS, "session_embedding"),
                            timeout=30)
  vectors = table[np.array(SESSIONS)].sum(axis=1)
  np.testing.assert_array_equal(_outputs(response)["embedding"], vectors)

  candidates = np.array([[1, 2], [3, 40], [0, 5]], np.int64)
  response = server.predict(testing.predict_request(MODEL, SESSIONS, "score_items",
                                                    candidates=candidates), timeout=30)
  expected = np.einsum("bd,bcd->bc", vectors, table[candidates])
  np.testing.assert_array_equal(_outputs(response)["scores"], expected)

  request = testing.predict_request(MODEL, SESSIONS)
  request.output_filter.append("item_ids")
  response = server.predict(request, timeout=30)
  assert list(response.outputs) == ["item_ids"]


def test_out_of_range_ids_are_counted_as_unknown(server):
  sessions = [[-5, 1, 10**12], [41, 0, 0]]
  response = server.predict(testing.predict_request(MODEL, sessions), timeout=30)
  _assert_matches_reference(response, sessions)
  np.testing.assert_array_equal(_outputs(response)["unknown_items"], [2, 1])


def test_get_model_metadata(server):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = MODEL
  response = server.prediction.GetModelMetadata(request, timeout=30)
  assert response.model_spec.name == MODEL
  assert response.model_spec.version.value == server.serving_version
  signature_defs = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata["signature_def"].Unpack(signature_defs)
  signatures = signature_defs.signature_def
  assert {"serving_default", "top_k", "session_embedding", "score_items"} <= set(signatures)
  assert signatures["top_k"].inputs["k"].dtype == types_pb2.DT_INT32
  assert signatures["serving_default"].outputs["item_ids"].dtype == types_pb2.DT_INT64

  for fields, words in (([], "at least one"), (["signature_def", "graph"], "not supported")):
    del request.metadata_field[:]
    request.metadata_field.extend(fields)
    code, details = _code(server.prediction.GetModelMetadata, request)
    assert code == Code.INVALID_ARGUMENT and words in details


def test_requests_without_a_model_spec_answer_as_tf_serving(server):
  """TF Serving's Predict, GetModelMetadata and GetModelStatus: INVALID_ARGUMENT "Missing
  ModelSpec" (tensorflow_serving/.../get_model_metadata_impl.cc, get_model_status_impl.cc)."""
  for call, request in (
      (server.predict, predict_pb2.PredictRequest()),
      (server.prediction.GetModelMetadata,
       get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])),
      (server.models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest())):
    assert _code(call, request) == (Code.INVALID_ARGUMENT, "Missing ModelSpec")


def test_get_model_status(server):
  (version_status,) = server.status(1)
  assert version_status.state == State.AVAILABLE
  assert version_status.status.error_code == 0
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = "other"
  assert _code(server.models.GetModelStatus, request)[0] == Code.NOT_FOUND
  request.model_spec.name = MODEL
  request.model_spec.version.value = 77
  assert _code(server.models.GetModelStatus, request)[0] == Code.NOT_FOUND


def test_unimplemented_methods(server):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = MODEL
  assert _code(server.prediction.Classify, request)[0] == Code.UNIMPLEMENTED
  reload = model_management_pb2.ReloadConfigRequest()
  assert _code(server.models.HandleReloadConfigRequest, reload)[0] == Code.UNIMPLEMENTED


def _with(**changes):
  """A request builder: the valid serving_default request, then `changes` applied."""
  def build():
    request = testing.predict_request(MODEL, SESSIONS)
    for name, value in changes.items():
      if name == "inputs":
        request.inputs.clear()
        for alias, proto in value.items():
          request.inputs[alias].CopyFrom(proto)
      elif name == "output_filter":
        request.output_filter.extend(value)
      elif name == "version":
        request.model_spec.version.value = value
      else:
        setattr(request.model_spec, name, value)
    return request
  return build


def _ints(array, dtype=types_pb2.DT_INT64):
  return tensors.from_ndarray(np.asarray(array), dtype)


_FLOATS = tensors.from_ndarray(np.ones((1, 2), np.float32))
_STRINGS = tensors.from_ndarray(np.array([[b"1", b"2"]], object))
_SHORT_DATA = _ints([[1, 2, 3], [4, 5, 6]])
del _SHORT_DATA.int64_val[-1]

BAD_REQUESTS = {
    "int32_sessions": (_with(inputs={"sessions": _ints(SESSIONS, types_pb2.DT_INT32)}),
                       Code.INVALID_ARGUMENT, "to be DT_INT64 but DT_INT32 is provided"),
    "float_sessions": (_with(inputs={"sessions": _FLOATS}),
                       Code.INVALID_ARGUMENT, "DT_FLOAT"),
    "strings_for_ints": (_with(inputs={"sessions": _STRINGS}), Code.INVALID_ARGUMENT, "DT_STRING"),
    "rank_1": (_with(inputs={"sessions": _ints([1, 2, 3])}), Code.INVALID_ARGUMENT, "rank 2"),
    "rank_3": (_with(inputs={"sessions": _ints([[[1]]])}), Code.INVALID_ARGUMENT, "rank 2"),
    "data_short_of_shape": (_with(inputs={"sessions": _SHORT_DATA}), Code.INVALID_ARGUMENT,
                            "5 values in int64_val, the shape needs 6"),
    "batch_over_limit": (_with(inputs={"sessions": _ints(np.ones((9, 2)))}),
                         Code.RESOURCE_EXHAUSTED, "max_batch_size"),
    "session_over_limit": (_with(inputs={"sessions": _ints(np.ones((1, 17)))}),
                           Code.RESOURCE_EXHAUSTED, "max_session_length"),
    "missing_input": (_with(signature_name="top_k"), Code.INVALID_ARGUMENT,
                      "Missing but required: {k}"),
    "extra_input": (_with(inputs={"sessions": _ints(SESSIONS), "k": _ints(3, types_pb2.DT_INT32)}),
                    Code.INVALID_ARGUMENT, "Sent extra: {'k'}"),
    "no_inputs": (_with(inputs={}), Code.INVALID_ARGUMENT, "input size does not match"),
    "unknown_signature": (_with(signature_name="nope"), Code.FAILED_PRECONDITION,
                          "Serving signature key 'nope' not found."),
    "unknown_model": (_with(name="other"), Code.NOT_FOUND, "Servable not found"),
    "path_as_model_name": (_with(name="../%s/1" % MODEL), Code.NOT_FOUND, "Servable not found"),
    "empty_model_name": (_with(name=""), Code.NOT_FOUND, "Servable not found"),
    "unknown_version": (_with(version=77), Code.NOT_FOUND, "Specific(toy, 77)"),
    "unknown_label": (_with(version_label="beta"), Code.INVALID_ARGUMENT,
                      "Unrecognized servable version label"),
    "unknown_output": (_with(output_filter=["nope"]), Code.INVALID_ARGUMENT,
                       "output tensor alias not found"),
    "repeated_output": (_with(output_filter=["scores", "scores"]), Code.INVALID_ARGUMENT,
                        "duplicate output tensor alias"),
    "empty_request": (predict_pb2.PredictRequest, Code.INVALID_ARGUMENT, "Missing ModelSpec"),
    "k_zero": (_with(signature_name="top_k", inputs={"sessions": _ints(SESSIONS),
                                                     "k": _ints(0, types_pb2.DT_INT32)}),
               Code.INVALID_ARGUMENT, "k must be >= 1; got 0"),
    "k_negative": (_with(signature_name="top_k", inputs={"sessions": _ints(SESSIONS),
                                                         "k": _ints(-3, types_pb2.DT_INT32)}),
                   Code.INVALID_ARGUMENT, "k must be >= 1; got -3"),
    "k_over_catalogue": (_with(signature_name="top_k",
                               inputs={"sessions": _ints(SESSIONS),
                                       "k": _ints(testing.NUM_ITEMS + 1, types_pb2.DT_INT32)}),
                         Code.INVALID_ARGUMENT, ""),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_request_gets_tf_serving_status_code(server, name):
  build, expected_code, words = BAD_REQUESTS[name]
  code, details = _code(server.predict, build())
  assert code == expected_code, details
  assert words in details
  if name.startswith("k_") and words:  # the served function's check, as one sentence
    assert details == words
  _assert_matches_reference(server.predict(testing.predict_request(MODEL, SESSIONS), timeout=30))


def test_rest_api(server):
  version = server.serving_version
  code, reply = server.rest("GET", "/v1/models/%s" % MODEL)
  assert code == 200
  assert {"version": str(version), "state": "AVAILABLE",
          "status": {"error_code": "OK", "error_message": ""}} in reply["model_version_status"]

  code, reply = server.rest("GET", "/v1/models/%s/metadata" % MODEL)
  assert code == 200 and reply["model_spec"]["version"] == str(version)
  assert "top_k" in reply["metadata"]["signature_def"]["signature_def"]

  expected = testing.toy_reference(version, SESSIONS)
  path = "/v1/models/%s/versions/%d:predict" % (MODEL, version)
  code, reply = server.rest("POST", path, {"instances": SESSIONS})
  assert code == 200, reply
  assert [row["item_ids"] for row in reply["predictions"]] == expected["item_ids"].tolist()
  assert [row["scores"] for row in reply["predictions"]] == expected["scores"].tolist()

  code, reply = server.rest("POST", path, {"signature_name": "top_k",
                                           "inputs": {"sessions": SESSIONS, "k": 2}})
  assert code == 200, reply
  assert reply["outputs"]["item_ids"] == expected["item_ids"][:, :2].tolist()

  code, reply = server.rest("POST", path, {"signature_name": "session_embedding",
                                           "instances": [{"sessions": [1, 2]}]})
  assert code == 200 and len(reply["predictions"][0]) == testing.DIM

  for method, rest_path, body, status in (
      ("POST", "/v1/models/other:predict", {"instances": SESSIONS}, 404),
      ("POST", path, b"{not json", 400),
      ("POST", path, {"instances": [[1.5, 2]]}, 400),
      ("POST", path, {"instances": [["1", 2]]}, 400),
      ("POST", path, {"instances": [[1, 2], [3]]}, 400),
      ("POST", path, {"instances": [[1]] * 9}, 429),
      ("POST", path, {"signature_name": "nope", "instances": SESSIONS}, 400),
      ("POST", path, {"inputs": SESSIONS, "instances": SESSIONS}, 400),
      ("POST", "/v1/models/%s:classify" % MODEL, {"examples": []}, 501),
      ("GET", "/v1/models/%s/versions/77" % MODEL, None, 404),
      ("GET", "/v2/nothing", None, 404)):
    code, reply = server.rest(method, rest_path, body)
    assert code == status and reply["error"], (rest_path, body, reply)


def test_client_library_and_cli(server):
  version = server.serving_version
  expected = testing.toy_reference(version, [[3, 1, 2]], 4)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
  response = stub.Predict(client.build_request(MODEL, [3, 1, 2], k=4), timeout=30)
  assert client.recommendations(response) == list(zip(expected["item_ids"][0].tolist(),
                                                      expected["scores"][0].tolist()))

  result = run_module("serving.client", "--server=%s" % server.process.address,
                      "--model_name=%s" % MODEL, "--session=3,1,2", "--k=4", timeout=300)
  assert result.returncode == 0, result.stderr
  lines = [line.split("\t") for line in result.stdout.splitlines()]
  assert [int(item) for item, _ in lines] == expected["item_ids"][0].tolist()
  assert [float(score) for _, score in lines] == expected["scores"][0].tolist()


# ---------------------------------------------------------------------------------------------
# Version lifecycle: swap under load, broken versions refused, the oldest unloaded.


def test_swap_to_new_version_under_load_drops_no_request(server, staged):
  """Version 1 is unloaded by the swap while requests to it are in flight: none may fail."""
  assert _code(server.predict, _with(version_label="canary")())[0] == Code.NOT_FOUND
  stop = threading.Event()
  answers, failures = [], []

  def send_requests():
    while not stop.is_set():
      try:
        response = server.predict(testing.predict_request(MODEL, SESSIONS), timeout=60)
        answers.append((response.model_spec.version.value, _outputs(response)))
      except grpc.RpcError as error:
        failures.append(error)

  threads = [threading.Thread(target=send_requests) for _ in range(8)]  # 8 clients (issue 8)
  for thread in threads:
    thread.start()
  try:
    deadline = time.monotonic() + 90
    while len(answers) < 20 and time.monotonic() < deadline:
      time.sleep(0.05)
    server.add_version(staged["good"][2], 2)
    while time.monotonic() < deadline:
      new_answers = [version for version, _ in answers if version == 2]
      if len(new_answers) >= 20:
        break
      time.sleep(0.05)
  finally:
    stop.set()
    for thread in threads:
      thread.join()
  server.serving_version = 2
  assert not failures, failures[:3]
  assert {version for version, _ in answers} == {1, 2}
  references = {version: testing.toy_reference(version, SESSIONS) for version in (1, 2)}
  for version, outputs in answers:
    for alias, expected in references[version].items():
      np.testing.assert_array_equal(outputs[alias], expected)
  assert server.predict(testing.predict_request(MODEL, SESSIONS),
                        timeout=30).model_spec.version.value == 2
  response = server.predict(_with(version_label="canary")(), timeout=30)
  assert response.model_spec.version.value == 2
  _assert_matches_reference(response)
  server.wait_for_state(1, {State.END}, timeout=30)
  assert _code(server.predict, _with(version=1)())[0] == Code.NOT_FOUND


@pytest.mark.parametrize("name,version,code,reason", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_version_is_refused_and_old_keeps_serving(server, staged, name, version, code,
                                                         reason):
  server.add_version(staged["broken"][name], version)
  refused = server.wait_for_state(version, {State.END})
  assert refused.status.error_code == code.value[0], refused.status.error_message
  assert reason in refused.status.error_message
  response = server.predict(testing.predict_request(MODEL, SESSIONS), timeout=30)
  assert response.model_spec.version.value == server.serving_version
  _assert_matches_reference(response)
  code_, _ = _code(server.predict, _with(version=version)())
  assert code_ == Code.NOT_FOUND


def test_good_version_after_refused_ones_replaces_the_served_one(server, staged):
  previous = server.serving_version
  server.add_version(staged["good"][NEXT_GOOD_VERSION], NEXT_GOOD_VERSION)
  server.wait_for_state(NEXT_GOOD_VERSION, {State.AVAILABLE})
  server.serving_version = NEXT_GOOD_VERSION
  response = server.predict(testing.predict_request(MODEL, SESSIONS), timeout=30)
  assert response.model_spec.version.value == NEXT_GOOD_VERSION
  _assert_matches_reference(response)
  server.wait_for_state(previous, {State.END}, timeout=30)
  assert _code(server.predict, _with(version=previous)())[0] == Code.NOT_FOUND
  states = {status.version: status.state for status in server.status()}
  assert states.pop(NEXT_GOOD_VERSION) == State.AVAILABLE
  assert {version for _, version, _, _ in BROKEN} | {previous} <= set(states)
  assert set(states.values()) == {State.END}


def test_sigterm_stops_the_server_cleanly(server):
  assert server.process.stop() == 0
  assert "Server stopped" in server.process.log()


# ---------------------------------------------------------------------------------------------
# A deployment-like server: a model config file (the toy with a version policy and a label, and
# the real exports of trainer.export, portable and ScaNN, side by side), TLS with client
# certificates on both ports.


def _openssl(*args, cwd):
  subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _certificates(folder):
  """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
  key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
  _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
           "-subj", "/CN=test-ca", cwd=folder)
  extensions = {"server": "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "extendedKeyUsage=serverAuth\n",
                "client": "extendedKeyUsage=clientAuth\n"}
  for name, extension in extensions.items():
    (folder / ("%s.ext" % name)).write_text("basicConstraints=CA:FALSE\n" + extension)
    _openssl("req", *key, "-keyout", "%s.key" % name, "-out", "%s.csr" % name,
             "-subj", "/CN=%s" % name, cwd=folder)
    _openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "%s.pem" % name, "-days", "2",
             "-extfile", "%s.ext" % name, cwd=folder)
  return {name: str(folder / name) for name in
          ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture(scope="module")
def real_exports(synthetic_prepared, tmp_path_factory):
  """An (untrained) model exported twice: brute force as 'attenmixer', ScaNN as
  'attenmixer_scann'; returns the export base folder."""
  # Imported here: the other tests of this module do not depend on the model or the exporter.
  from trainer import export
  from tfrs_attenmixer import ModelConfig, SessionRetrievalModel
  model = SessionRetrievalModel(ModelConfig(embedding_dim=16, num_heads=2),
                                synthetic_prepared.num_items)
  base = tmp_path_factory.mktemp("exports")
  for index, name in (("brute_force", "attenmixer"), ("scann", "attenmixer_scann")):
    export.export_model(model, synthetic_prepared, str(base), model_name=name, index=index,
                        max_length=8)
  return base


REAL_MODELS = ("attenmixer", "attenmixer_scann")


@pytest.fixture(scope="module")
def deployed(real_exports, staged, tmp_path_factory):
  """(server process, channel, certificate paths): TLS with a client certificate, unless there
  is no `openssl` to make the certificates (then plaintext, and the certificates are None)."""
  folder = tmp_path_factory.mktemp("deployed")
  certificates = _certificates(folder) if shutil.which("openssl") else None
  shutil.copytree(staged["pristine"], real_exports / MODEL)
  config = folder / "models.config"
  config.write_text(
      "model_config_list {\n"
      "  config { name: '%s' base_path: '%s/%s' model_platform: 'tensorflow'\n"
      "           version_labels { key: 'stable' value: 2 }\n"
      "           model_version_policy { specific { versions: 1 versions: 2 } } }\n" % (
          MODEL, real_exports, MODEL) +
      "".join("  config { name: '%s' base_path: '%s/%s' }\n" % (name, real_exports, name)
              for name in REAL_MODELS) + "}\n")
  tls_flags = () if certificates is None else (
      "--ssl_cert=%s" % certificates["server.pem"], "--ssl_key=%s" % certificates["server.key"],
      "--ssl_client_ca=%s" % certificates["ca.pem"])
  process = testing.ServerProcess(str(folder), "--model_config_file=%s" % config, *tls_flags)
  tls = client.channel(process.address, **({} if certificates is None else dict(
      ssl_ca=certificates["ca.pem"], ssl_client_cert=certificates["client.pem"],
      ssl_client_key=certificates["client.key"])))
  try:
    for name in (MODEL,) + REAL_MODELS:
      process.wait_until_available(name, tls)
    yield process, tls, certificates
  finally:
    tls.close()
    assert process.stop() == 0, process.log()[-3000:]


def test_tls_with_client_certificates_and_model_config_file(deployed):
  process, tls, certificates = deployed
  if certificates is None:
    pytest.skip("no openssl command to make the test certificates")
  stub = prediction_service_pb2_grpc.PredictionServiceStub(tls)
  response = stub.Predict(_with(version_label="stable")(), timeout=30)
  assert response.model_spec.version.value == 2
  _assert_matches_reference(response)
  assert [status.version for status in
          model_service_pb2_grpc.ModelServiceStub(tls).GetModelStatus(
              get_model_status_pb2.GetModelStatusRequest(model_spec={"name": MODEL}),
              timeout=30).model_version_status] == [2, 1]

  for untrusted in (grpc.insecure_channel(process.address),
                    client.channel(process.address, ssl_ca=certificates["ca.pem"])):
    with untrusted:
      with pytest.raises(grpc.RpcError) as raised:
        prediction_service_pb2_grpc.PredictionServiceStub(untrusted).Predict(
            testing.predict_request(MODEL, SESSIONS), timeout=10)
      assert raised.value.code() == Code.UNAVAILABLE

  context = ssl.create_default_context(cafile=certificates["ca.pem"])
  context.load_cert_chain(certificates["client.pem"], certificates["client.key"])
  connection = http.client.HTTPSConnection("127.0.0.1", process.rest_port, context=context,
                                           timeout=30)
  try:
    connection.request("GET", "/v1/models/%s/labels/stable" % MODEL)
    reply = connection.getresponse()
    assert reply.status == 200
    assert json.loads(reply.read())["model_version_status"][0]["version"] == "2"
  finally:
    connection.close()


def test_serves_the_portable_and_the_scann_export(deployed, synthetic_prepared):
  from trainer import export
  process, tls, _ = deployed
  stub = prediction_service_pb2_grpc.PredictionServiceStub(tls)
  raw_ids = {int(raw) for raw in synthetic_prepared.vocabulary().raw_ids}
  known = sorted(raw_ids)
  sessions = [[known[3], known[10], known[5]], [known[7], 0, 0], [10**15, 0, 0]]
  candidates = np.array([known[:4]] * 3, np.int64)
  answers = {}
  for name in REAL_MODELS:
    top = stub.Predict(testing.predict_request(name, sessions), timeout=60)
    assert top.model_spec.name == name and top.model_spec.version.value == 1
    outputs = _outputs(top)
    assert outputs["item_ids"].shape == (3, export.DEFAULT_K)
    assert set(outputs["item_ids"].ravel().tolist()) <= raw_ids
    assert (np.diff(outputs["scores"], axis=1) <= 1e-5).all()
    np.testing.assert_array_equal(outputs["unknown_items"], [0, 0, 1])
    embedding = _outputs(stub.Predict(
        testing.predict_request(name, sessions, "session_embedding"), timeout=60))
    scores = _outputs(stub.Predict(testing.predict_request(
        name, sessions, "score_items", candidates=candidates), timeout=60))
    answers[name] = (outputs, embedding["embedding"], scores["scores"])
    reply = stub.Predict(client.build_request(name, sessions[0], k=3), timeout=60)
    assert len(client.recommendations(reply)) == 3
  # Same model, two indexes: the exact signatures agree (the index's recall is tested by
  # tests/test_export.py, on a trained model).
  (_, embedding, scores), (_, scann_embedding, scann_scores) = answers.values()
  np.testing.assert_allclose(scann_embedding, embedding, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(scann_scores, scores, rtol=1e-5, atol=1e-5)
  assert process.log().count("ran 2 warm-up requests") >= 4  # toy 1 and 2, both exports
