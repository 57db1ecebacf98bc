"""Hostile input: random and malformed requests each get a proper status, and the server lives on.

A real server process (one for the module) serves a toy version (`serving.testing`) with small
limits. Hypothesis sends it random PredictRequests (any dtype, shapes with negative or huge
dimensions and no data, strings where ints are expected, random ids, unknown aliases, models,
versions and signatures) and random REST bodies; each must be answered with OK (and then be
correct) or one of TF Serving's client-error codes, and the next valid request must still be
answered correctly.
"""

import http.client
import json
import socket

import grpc
from hypothesis import HealthCheck, given, settings, strategies as st
import numpy as np
import pytest

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import tensors
from serving import testing

MODEL = "toy"
MAX_BATCH = 8
MAX_LENGTH = 16
MAX_MESSAGE_BYTES = 1 << 20
VALID_SESSIONS = [[1, 2, 3], [7, 0, 0]]
Code = grpc.StatusCode
# The codes TF Serving answers bad requests with; anything else (INTERNAL, UNKNOWN, UNAVAILABLE)
# would be a server bug or crash.
CLIENT_ERRORS = {Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.FAILED_PRECONDITION,
                 Code.RESOURCE_EXHAUSTED}
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  root = tmp_path_factory.mktemp("hostile")
  testing.write_toy_version(str(root / "models" / MODEL), 1)
  process = testing.ServerProcess(
      str(root), "--model_base_path=%s" % (root / "models" / MODEL), "--model_name=%s" % MODEL,
      "--max_batch_size=%d" % MAX_BATCH, "--max_session_length=%d" % MAX_LENGTH,
      "--max_message_bytes=%d" % MAX_MESSAGE_BYTES, "--file_system_poll_wait_seconds=0")
  channel = grpc.insecure_channel(process.address)
  try:
    process.wait_until_available(MODEL, channel)
    yield process, channel
  finally:
    channel.close()
    assert process.stop() == 0, process.log()[-3000:]


def _assert_answers_valid_request(channel):
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  response = stub.Predict(testing.predict_request(MODEL, VALID_SESSIONS), timeout=30)
  assert response.model_spec.version.value == 1
  expected = testing.toy_reference(1, VALID_SESSIONS)
  for alias, array in expected.items():
    np.testing.assert_array_equal(tensors.to_ndarray(response.outputs[alias]), array)


def _send(channel, request):
  """The response, or the status code of the failure (which must be a client error)."""
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  try:
    return stub.Predict(request, timeout=30)
  except grpc.RpcError as error:
    assert error.code() in CLIENT_ERRORS, (error.code(), error.details())
    return error.code()


# ---------------------------------------------------------------------------------------------
# Strategies.

_DTYPES = st.one_of(st.sampled_from([types_pb2.DT_INT64] * 4 + [types_pb2.DT_INT32] * 2 + [
    types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_STRING, types_pb2.DT_BOOL,
    types_pb2.DT_HALF, types_pb2.DT_UINT8, types_pb2.DT_INVALID, types_pb2.DT_COMPLEX64,
    types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT]), st.integers(0, 300))
_DIMS = st.one_of(st.integers(0, 4), st.integers(-(2**63), -1), st.integers(2**20, 2**63 - 1))
_INT64S = st.integers(-(2**63), 2**63 - 1)
_VALUES = {
    "int64_val": st.lists(_INT64S, max_size=12),
    "int_val": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=12),
    "float_val": st.lists(st.floats(width=32), max_size=12),
    "double_val": st.lists(st.floats(), max_size=12),
    "string_val": st.lists(st.binary(max_size=8), max_size=6),
    "bool_val": st.lists(st.booleans(), max_size=6),
    "half_val": st.lists(st.integers(0, 2**16 + 5), max_size=6),
    "tensor_content": st.binary(max_size=160),
}


@st.composite
def _tensor_protos(draw):
  """Any TensorProto: random dtype, shape (possibly negative or huge) and data."""
  proto = tensor_pb2.TensorProto(dtype=draw(_DTYPES))
  for size in draw(st.lists(_DIMS, max_size=4)):
    proto.tensor_shape.dim.add(size=size)
  proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(st.booleans())
  for field in draw(st.lists(st.sampled_from(sorted(_VALUES)), max_size=2, unique=True)):
    value = draw(_VALUES[field])
    if field == "tensor_content":
      proto.tensor_content = value
    else:
      getattr(proto, field).extend(value)
  return proto


@st.composite
def _sessions(draw):
  """A well-formed `sessions` tensor with random ids (negative, unknown, huge)."""
  batch = draw(st.integers(1, MAX_BATCH))
  length = draw(st.integers(1, MAX_LENGTH))
  ids = draw(st.lists(st.one_of(st.integers(-3, testing.NUM_ITEMS + 3), _INT64S),
                      min_size=batch * length, max_size=batch * length))
  array = np.array(ids, np.int64).reshape(batch, length)
  return array, tensors.from_ndarray(array, use_tensor_content=draw(st.booleans()))


_ALIASES = st.one_of(st.sampled_from(["sessions", "k", "candidates"]), st.text(max_size=8))
# The toy's signatures and their inputs ('' is serving_default).
_SIGNATURE_INPUTS = {"": ["sessions"], "serving_default": ["sessions"], "top_k": ["sessions", "k"],
                     "session_embedding": ["sessions"], "score_items": ["sessions", "candidates"]}


def _mostly(valid, other):
  """`valid` nine times in ten, else `other`."""
  return st.integers(0, 9).flatmap(lambda i: valid if i else other)


def _valid_input(alias):
  if alias == "k":
    return st.integers(-3, testing.NUM_ITEMS + 3).map(
        lambda k: tensors.from_ndarray(np.int32(k)))
  return _sessions().map(lambda pair: pair[1])


@st.composite
def _requests(draw):
  """A PredictRequest, mostly well addressed, with valid and invalid inputs mixed."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = draw(_mostly(st.just(MODEL), st.text(max_size=12)))
  signature = draw(_mostly(st.sampled_from(sorted(_SIGNATURE_INPUTS)), st.one_of(
      st.just("__saved_model_init_op"), st.text(max_size=8))))
  request.model_spec.signature_name = signature
  choice = draw(_mostly(st.just("latest"), st.sampled_from(["version", "label"])))
  if choice == "version":
    request.model_spec.version.value = draw(st.one_of(st.just(1), _INT64S))
  elif choice == "label":
    request.model_spec.version_label = draw(st.text(max_size=8))
  aliases = draw(_mostly(st.just(_SIGNATURE_INPUTS.get(signature, ["sessions"])),
                         st.lists(_ALIASES, max_size=3, unique=True)))
  for alias in aliases:
    request.inputs[alias].CopyFrom(draw(st.one_of(_valid_input(alias), _tensor_protos())))
  request.output_filter.extend(draw(_mostly(st.just([]), st.lists(st.one_of(st.sampled_from(
      ["item_ids", "scores", "unknown_items", "embedding"]), st.text(max_size=5)), max_size=3))))
  return request


# ---------------------------------------------------------------------------------------------
# gRPC.


@SETTINGS
@given(request=_requests())
def test_random_requests_get_a_client_error_or_an_answer(server, request):
  _, channel = server
  _send(channel, request)
  _assert_answers_valid_request(channel)


@SETTINGS
@given(sessions=_sessions())
def test_any_ids_in_a_well_formed_session_are_answered_correctly(server, sessions):
  _, channel = server
  array, proto = sessions
  request = testing.predict_request(MODEL, [[0]])
  request.inputs["sessions"].CopyFrom(proto)
  response = _send(channel, request)
  assert isinstance(response, predict_pb2.PredictResponse), response
  for alias, expected in testing.toy_reference(1, array).items():
    np.testing.assert_array_equal(tensors.to_ndarray(response.outputs[alias]), expected)


@SETTINGS
@given(k=st.integers(-(2**31), 2**31 - 1))
def test_any_k_gets_an_answer_or_invalid_argument(server, k):
  _, channel = server
  request = testing.predict_request(MODEL, VALID_SESSIONS, "top_k", k=np.int32(k))
  response = _send(channel, request)
  if 1 <= k <= testing.NUM_ITEMS:  # k <= 0: INVALID_ARGUMENT, as the exports answer
    assert isinstance(response, predict_pb2.PredictResponse)
    assert tensors.to_ndarray(response.outputs["item_ids"]).shape == (2, k)
  else:
    assert response == Code.INVALID_ARGUMENT


def _sessions_proto(shape, **fields):
  proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, **fields)
  for size in shape:
    proto.tensor_shape.dim.add(size=size)
  return proto


@pytest.mark.parametrize("proto,code", [
    (_sessions_proto([2**40, 2**40]), Code.RESOURCE_EXHAUSTED),
    (_sessions_proto([1, 2**62]), Code.RESOURCE_EXHAUSTED),
    (_sessions_proto([MAX_BATCH, MAX_LENGTH + 1], int64_val=[1]), Code.RESOURCE_EXHAUSTED),
    (_sessions_proto([2**63 - 1, 2**63 - 1, 2**63 - 1]), Code.INVALID_ARGUMENT),
    (_sessions_proto([-1, 3]), Code.INVALID_ARGUMENT),
    (_sessions_proto([4, 4]), Code.INVALID_ARGUMENT),
    (_sessions_proto([2, 2], tensor_content=b"\x01" * 31), Code.INVALID_ARGUMENT),
    (_sessions_proto([2, 2], tensor_content=b"\x01" * 32, int64_val=[1, 2, 3, 4]),
     Code.INVALID_ARGUMENT),
    (_sessions_proto([1, 2], string_val=[b"1", b"2"]), Code.INVALID_ARGUMENT),
    (_sessions_proto([1, 2], float_val=[1.0, 2.0]), Code.INVALID_ARGUMENT),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"1,2,3"]),
     Code.INVALID_ARGUMENT),
], ids=["huge_dims_no_data", "huge_length", "over_length_broadcast", "huge_rank_3",
        "negative_dim", "no_data", "content_one_byte_short", "content_and_values",
        "strings_in_int_tensor", "floats_in_int_tensor", "string_tensor"])
def test_malformed_sessions_tensor(server, proto, code):
  _, channel = server
  request = testing.predict_request(MODEL, [[1]])
  request.inputs["sessions"].CopyFrom(proto)
  assert _send(channel, request) == code
  _assert_answers_valid_request(channel)


def test_oversized_message_is_resource_exhausted(server):
  _, channel = server
  request = testing.predict_request(MODEL, [[1]])
  request.inputs["sessions"].CopyFrom(_sessions_proto(
      [MAX_BATCH, MAX_LENGTH], tensor_content=b"\x00" * (MAX_MESSAGE_BYTES + 1)))
  assert _send(channel, request) == Code.RESOURCE_EXHAUSTED
  _assert_answers_valid_request(channel)


_TRUNCATED_REQUEST = testing.predict_request(MODEL, [[1]]).SerializeToString()[:-3]


@pytest.mark.parametrize("payload", [b"\xff" * 64, b"\x0a\x05\x12\x03abc\x12", _TRUNCATED_REQUEST])
def test_bytes_that_are_no_predict_request(server, payload):
  _, channel = server
  predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
  try:
    predict(payload, timeout=30)
  except grpc.RpcError as error:
    # gRPC answers a request it cannot parse with INTERNAL, as TF Serving's C++ gRPC does.
    assert error.code() in CLIENT_ERRORS | {Code.INTERNAL}, error
  _assert_answers_valid_request(channel)


# ---------------------------------------------------------------------------------------------
# REST.


def test_an_over_limit_body_sent_whole_gets_its_413(server):
  """Python's urllib sends the whole body before reading the reply: it gets the 413, not a
  broken pipe."""
  import urllib.error
  import urllib.request
  process, channel = server
  body = b'{"instances": [' + b"1, " * (4 * MAX_MESSAGE_BYTES) + b"1]}"
  request = urllib.request.Request(
      "http://127.0.0.1:%d/v1/models/%s:predict" % (process.rest_port, MODEL), data=body)
  with pytest.raises(urllib.error.HTTPError) as raised:
    urllib.request.urlopen(request, timeout=30)
  assert raised.value.code == 413
  assert "over the limit" in json.loads(raised.value.read())["error"]
  _assert_answers_valid_request(channel)


def test_rest_listen_backlog_holds_a_burst_of_clients(server):
  """The listening socket's backlog (ss's Send-Q) is the server's, not http.server's 5."""
  import subprocess
  from serving import rest
  process, _ = server
  listing = subprocess.run(["ss", "-ltnH", "sport", "= :%d" % process.rest_port],
                           capture_output=True, text=True, check=True).stdout.split()
  with open("/proc/sys/net/core/somaxconn") as limit:
    assert int(listing[2]) == min(rest.LISTEN_BACKLOG, int(limit.read()))


def _post(process, path, body, headers=None):
  connection = http.client.HTTPConnection("127.0.0.1", process.rest_port, timeout=30)
  try:
    connection.request("POST", path, body=body, headers=headers or {})
    reply = connection.getresponse()
    return reply.status, reply.read()
  finally:
    connection.close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.one_of(st.sampled_from(["sessions", "k", "b64", "candidates"]), st.text(max_size=5)),
        children, max_size=3),
    max_leaves=20)


# Rectangular batches of ids (valid for `sessions` unless too many rows or too long).
_ROWS = st.integers(1, MAX_LENGTH + 1).flatmap(lambda length: st.lists(st.lists(
    st.one_of(st.integers(-3, testing.NUM_ITEMS + 3), st.integers(-(2**64), 2**64)),
    min_size=length, max_size=length), min_size=1, max_size=MAX_BATCH + 1))
_NAMED_ROWS = st.fixed_dictionaries({"sessions": _ROWS}, optional={
    "k": st.integers(-3, 50) | _JSON, "candidates": _ROWS | _JSON})


@SETTINGS
@given(body=st.fixed_dictionaries({}, optional={
    "instances": st.one_of(_ROWS, _JSON, st.lists(_NAMED_ROWS, max_size=3)),
    "inputs": st.one_of(_ROWS, _NAMED_ROWS, _JSON),
    "signature_name": st.one_of(st.sampled_from(sorted(_SIGNATURE_INPUTS)), _JSON)}))
def test_random_rest_bodies_get_a_client_error_or_an_answer(server, body):
  process, channel = server
  status, reply = _post(process, "/v1/models/%s:predict" % MODEL, json.dumps(body))
  assert status in (200, 400, 404, 429), (status, reply)
  assert json.loads(reply)
  _assert_answers_valid_request(channel)


@pytest.mark.parametrize("body,headers,status", [
    (b"[" * 100000 + b"]" * 100000, {}, 400),
    (b'{"instances": [[1e400, 2]]}', {}, 400),
    (b'{"instances": [[18446744073709551616]]}', {}, 400),
    (b'{"instances": ' + b"[" * 40 + b"1" + b"]" * 40 + b"}", {}, 400),
    (b"\xff\xfe", {}, 400),
], ids=["deep_nesting", "huge_float", "huge_int", "deep_instance", "not_utf8"])
def test_malformed_rest_bodies(server, body, headers, status):
  process, channel = server
  code, reply = _post(process, "/v1/models/%s:predict" % MODEL, body, headers)
  assert code == status, reply
  assert json.loads(reply)["error"]
  _assert_answers_valid_request(channel)


@pytest.mark.parametrize("length_header,status", [
    (b"Content-Length: %d\r\n" % (MAX_MESSAGE_BYTES + 1), 413),
    (b"Content-Length: 99999999999999999999\r\n", 413),
    (b"Content-Length: -5\r\n", 411),
    (b"", 411),
], ids=["over_limit", "absurd", "negative", "missing"])
def test_rest_body_length_is_checked_before_reading(server, length_header, status):
  """The server answers from the headers alone: no body is sent (an over-limit body is waited
  for briefly, then answered without)."""
  process, channel = server
  with socket.create_connection(("127.0.0.1", process.rest_port), timeout=30) as connection:
    connection.sendall(b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: test\r\n%s\r\n" % (
        MODEL.encode(), length_header))
    reply = b""
    while chunk := connection.recv(65536):
      reply += chunk
  assert reply.startswith(b"HTTP/1.0 %d " % status), reply[:200]
  assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
  _assert_answers_valid_request(channel)
