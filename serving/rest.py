"""TF Serving's REST API on a second port (standard library HTTP server, a bounded thread pool).

  POST /v1/models/NAME[/versions/N | /labels/L]:predict   {"instances": [...]} (row format) or
                                                          {"inputs": ...} (columnar format),
                                                          optional "signature_name"
  GET  /v1/models/NAME[/versions/N | /labels/L]           GetModelStatus as JSON
  GET  /v1/models/NAME[/versions/N | /labels/L]/metadata  GetModelMetadata as JSON

Row format: each instance is the value of the signature's only input, or an object naming every
input; the instances are stacked into a batch and the reply is {"predictions": [...]}, one entry
(or one object of outputs) per instance. Columnar format: "inputs" is the only input's value or an
object of inputs, the reply is {"outputs": ...}. Strings travel as UTF-8 text or {"b64": ...}.
Errors answer {"error": message} with the HTTP status TF Serving maps from the gRPC code.
"""

import base64
import concurrent.futures
import http.server
import json
import re
import socket
import threading
import urllib.parse

from absl import logging
from google.protobuf import json_format
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2

from serving import status
from serving import tensors
from serving.servable import SIGNATURE_DEF_FIELD

_MODEL = (r"/v1/models/(?P<name>[^/:]+)"
          r"(?:/versions/(?P<version>[0-9]{1,18})|/labels/(?P<label>[^/:]+))?")
_PREDICT = re.compile(_MODEL + r":(?P<verb>predict|classify|regress)")
_STATUS = re.compile(_MODEL)
_METADATA = re.compile(_MODEL + r"/metadata")
# Seconds a connection may stay idle (reading the request, TLS handshake) before it is dropped.
SOCKET_TIMEOUT_SECONDS = 30
# Connections waiting to be accepted (the kernel caps it at net.core.somaxconn).
LISTEN_BACKLOG = 1024
# Most bytes of an over-limit body read before the 413 is sent; a longer body is cut off.
MAX_DRAINED_BYTES = 64 << 20
# Seconds without a byte of an over-limit body after which the 413 is sent anyway.
DRAIN_IDLE_SECONDS = 2


def _model_spec(match):
  spec = model_pb2.ModelSpec(name=urllib.parse.unquote(match.group("name")))
  if match.group("version"):
    spec.version.value = int(match.group("version"))
  elif match.group("label"):
    spec.version_label = urllib.parse.unquote(match.group("label"))
  return spec


def _leaf(value, dtype, alias):
  """A JSON scalar checked against `dtype` (ints stay ints, strings become bytes)."""
  def bad():
    return status.invalid_argument("input %s: JSON value %s is not a valid %s" % (
        status.quote(alias), status.quote(json.dumps(value)), tensors.dtype_name(dtype)))
  if dtype == types_pb2.DT_STRING:
    if isinstance(value, str):
      return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
      try:
        return base64.b64decode(value["b64"], validate=True)
      except ValueError:
        raise bad() from None
    raise bad()
  if dtype == types_pb2.DT_BOOL:
    if isinstance(value, bool):
      return value
    raise bad()
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise bad()
  if tensors.numpy_dtype(dtype).kind in "iu":
    info = np.iinfo(tensors.numpy_dtype(dtype))
    if not isinstance(value, int) or not info.min <= value <= info.max:
      raise bad()
  return value


def json_to_array(value, dtype, alias, limits):
  """The numpy array of a (nested list) JSON value for an input of `dtype`.

  Raises INVALID_ARGUMENT for ragged lists or values of the wrong type, RESOURCE_EXHAUSTED when
  the shape is over the limits.
  """
  shape = []
  level = [value]
  while level and isinstance(level[0], list):
    size = len(level[0])
    if any(not isinstance(item, list) or len(item) != size for item in level):
      raise status.invalid_argument("input %s: nested lists of different lengths" %
                                    status.quote(alias))
    shape.append(size)
    if len(shape) > tensors.MAX_RANK:
      raise status.invalid_argument("input %s: nested deeper than %d" % (
          status.quote(alias), tensors.MAX_RANK))
    level = [item for items in level for item in items]
  limits.check(alias, shape)
  flat = np.empty(len(level), dtype=tensors.numpy_dtype(dtype))
  for index, item in enumerate(level):
    flat[index] = _leaf(item, dtype, alias)
  return flat.reshape(shape)


def _to_json(array):
  """A numpy array as JSON values (bytes as UTF-8 text, or {"b64": ...} if not valid UTF-8)."""
  if array.dtype != object:
    return array.tolist()
  def text(value):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError:
      return {"b64": base64.b64encode(value).decode("ascii")}
  return np.vectorize(text, otypes=[object])(array).tolist() if array.size else array.tolist()


class RestApi:
  """The request handling of the REST API, independent of the HTTP server."""

  def __init__(self, manager, limits):
    self._manager = manager
    self._limits = limits

  def get(self, path):
    """(HTTP status, JSON object) for a GET of `path`."""
    match = _METADATA.fullmatch(path)
    if match:
      servable = self._manager.resolve(_model_spec(match))
      response = servable.get_model_metadata(get_model_metadata_pb2.GetModelMetadataRequest(
          metadata_field=[SIGNATURE_DEF_FIELD]))
      return 200, {
          "model_spec": json_format.MessageToDict(response.model_spec,
                                                  preserving_proto_field_name=True),
          "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(
              servable.signature_defs, preserving_proto_field_name=True)}}
    match = _STATUS.fullmatch(path)
    if match:
      response = self._manager.get_model_status(
          get_model_status_pb2.GetModelStatusRequest(model_spec=_model_spec(match)))
      return 200, json_format.MessageToDict(response, preserving_proto_field_name=True,
                                            always_print_fields_with_no_presence=True)
    raise status.not_found("Malformed request: GET %s" % status.quote(path))

  def post(self, path, body):
    """(HTTP status, JSON object) for a POST of `body` (bytes) to `path`."""
    match = _PREDICT.fullmatch(path)
    if not match:
      raise status.not_found("Malformed request: POST %s" % status.quote(path))
    if match.group("verb") != "predict":
      raise status.unimplemented("%s is not supported by this server" % match.group("verb"))
    try:
      request = json.loads(body)
    except (ValueError, RecursionError) as error:
      raise status.invalid_argument("JSON Parse error: %s" % error) from None
    if not isinstance(request, dict):
      raise status.invalid_argument("JSON Value: the request body must be a JSON object")
    servable = self._manager.resolve(_model_spec(match))
    signature_name = request.get("signature_name", "")
    if not isinstance(signature_name, str):
      raise status.invalid_argument("'signature_name' must be a string")
    signature = servable.signature(signature_name)
    formats = [key for key in ("instances", "inputs") if key in request]
    if len(formats) != 1:
      raise status.invalid_argument(
          "Missing 'inputs' or 'instances' key" if not formats else
          "Request body must contain either 'instances' or 'inputs', not both")
    if formats[0] == "instances":
      arrays = self._instances(request["instances"], signature)
    else:
      arrays = self._columns(request["inputs"], signature)
    outputs = servable.run(signature, arrays, [], self._limits)
    if formats[0] == "inputs":
      if len(outputs) == 1:
        return 200, {"outputs": _to_json(next(iter(outputs.values())))}
      return 200, {"outputs": {alias: _to_json(array) for alias, array in outputs.items()}}
    return 200, {"predictions": self._predictions(outputs, len(request["instances"]))}

  def _named(self, value, signature, what):
    """{alias: JSON value}: an object naming the inputs, or the value of the only input."""
    if isinstance(value, dict) and not (set(value) == {"b64"}):
      return value
    if len(signature.inputs) != 1:
      raise status.invalid_argument(
          "%s must name the inputs of signature %s (%s) in a JSON object" % (
              what, status.quote(signature.name), ",".join(sorted(signature.inputs))))
    return {next(iter(signature.inputs)): value}

  def _columns(self, inputs, signature):
    named = self._named(inputs, signature, "'inputs'")
    signature.check_aliases(named.keys())
    return {alias: json_to_array(value, signature.inputs[alias].dtype, alias, self._limits)
            for alias, value in named.items()}

  def _instances(self, instances, signature):
    if not isinstance(instances, list) or not instances:
      raise status.invalid_argument("'instances' must be a non-empty JSON list")
    if len(instances) > self._limits.max_batch_size:
      raise status.resource_exhausted(
          "%d instances, over the server's limit of %d (--max_batch_size)" % (
              len(instances), self._limits.max_batch_size))
    rows = [self._named(instance, signature, "each instance") for instance in instances]
    signature.check_aliases(rows[0].keys())
    columns = {}
    for alias in rows[0]:
      if any(set(row) != set(rows[0]) for row in rows):
        raise status.invalid_argument("the instances do not all name the same inputs")
      columns[alias] = json_to_array([row[alias] for row in rows],
                                     signature.inputs[alias].dtype, alias, self._limits)
    return columns

  @staticmethod
  def _predictions(outputs, batch_size):
    for alias, array in outputs.items():
      if array.ndim == 0 or array.shape[0] != batch_size:
        raise status.invalid_argument(
            "output %s of shape %s cannot be split into %d instances; use the columnar "
            "'inputs' format" % (status.quote(alias), list(array.shape), batch_size))
    if len(outputs) == 1:
      return _to_json(next(iter(outputs.values())))
    columns = {alias: _to_json(array) for alias, array in outputs.items()}
    return [{alias: column[row] for alias, column in columns.items()}
            for row in range(batch_size)]


class _Handler(http.server.BaseHTTPRequestHandler):
  """One HTTP request; the server's `api` answers it."""

  server_version = "tfrs-attenmixer-rest"
  timeout = SOCKET_TIMEOUT_SECONDS

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.vlog(1, "REST %s: " + format, self.client_address[0], *args)

  def _reply(self, code, payload):
    body = json.dumps(payload).encode("utf-8")
    self.send_response(code)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _answer(self, call, *args):
    path = urllib.parse.urlsplit(self.path).path
    try:
      code, payload = call(path, *args)
    except status.ServingError as error:
      code, payload = error.http_status, {"error": error.message}
    except Exception:  # pylint: disable=broad-except  (a bug must not kill the server)
      logging.exception("REST request %s failed", status.quote(self.path))
      code, payload = 500, {"error": "internal error"}
    self._reply(code, payload)

  def _drain(self, length):
    """Reads and drops the body when it is at most `MAX_DRAINED_BYTES`, until it ends or the
    client sends nothing for `DRAIN_IDLE_SECONDS`."""
    if length > MAX_DRAINED_BYTES:
      return
    self.connection.settimeout(DRAIN_IDLE_SECONDS)
    try:
      while length > 0:
        chunk = self.rfile.read1(min(length, 1 << 16))
        if not chunk:
          return
        length -= len(chunk)
    except OSError:  # idle (socket.timeout) or reset: answer what can be answered
      return

  def do_GET(self):  # pylint: disable=invalid-name
    self._answer(self.server.api.get)

  def do_POST(self):  # pylint: disable=invalid-name
    length = self.headers.get("Content-Length")
    if length is None or not length.isdigit():
      self.close_connection = True
      self._reply(411, {"error": "a POST needs a Content-Length"})
      return
    if int(length) > self.server.max_body_bytes:
      # Clients that send the whole body before reading (Python's urllib) would see a broken
      # pipe if the connection closed under them: read the body first, up to a bound.
      self.close_connection = True
      self._drain(int(length))
      self._reply(413, {"error": "request body of %s bytes is over the limit of %d" % (
          length, self.server.max_body_bytes)})
      return
    body = self.rfile.read(int(length))
    self._answer(self.server.api.post, body)


class RestServer(http.server.HTTPServer):
  """The REST API on (host, port), answering with a pool of `num_threads` threads.

  The listen backlog is `LISTEN_BACKLOG` connections (http.server's default of 5 drops the
  connections of a burst of clients, which then retry after a second).
  """

  request_queue_size = LISTEN_BACKLOG

  def __init__(self, api, host, port, max_body_bytes, num_threads, ssl_context=None):
    if ":" in host:
      self.address_family = socket.AF_INET6
    super().__init__((host, port), _Handler)
    self.api = api
    self.max_body_bytes = max_body_bytes
    self._ssl = ssl_context is not None
    if ssl_context is not None:
      self.socket = ssl_context.wrap_socket(self.socket, server_side=True,
                                            do_handshake_on_connect=False)
    self._pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="rest")
    self._thread = None

  def process_request(self, request, client_address):
    self._pool.submit(self._process, request, client_address)

  def _process(self, request, client_address):
    try:
      request.settimeout(SOCKET_TIMEOUT_SECONDS)
      if self._ssl:
        request.do_handshake()
      self.finish_request(request, client_address)
    except Exception:  # pylint: disable=broad-except  (a broken client must not kill the pool)
      logging.vlog(1, "REST connection from %s failed", client_address, exc_info=True)
    finally:
      self.shutdown_request(request)

  def start(self):
    self._thread = threading.Thread(target=self.serve_forever, name="rest-server", daemon=True)
    self._thread.start()

  def stop(self):
    """Stops accepting, lets the requests being answered finish, and closes the socket."""
    self.shutdown()
    self._pool.shutdown(wait=True, cancel_futures=True)
    self.server_close()
