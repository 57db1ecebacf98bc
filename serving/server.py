r"""A model server speaking TensorFlow Serving's gRPC API (and its REST API on a second port).

  python -m serving.server --model_base_path=/exports/attenmixer --model_name=attenmixer \
      --port=8500 --rest_api_port=8501

Implements `PredictionService` (Predict, GetModelMetadata; Classify, Regress and MultiInference
answer UNIMPLEMENTED) and `ModelService` (GetModelStatus; HandleReloadConfigRequest answers
UNIMPLEMENTED) from `tensorflow_serving.apis`, with TF Serving's semantics: model spec name,
version or version label, signature name ('' = serving_default), output_filter, TensorProtos in
(typed fields or tensor_content) and out (typed fields), the answering version in the reply's
model_spec, and TF Serving's status codes. Versions are discovered, loaded, validated and switched
by `serving.model_manager`; requests beyond the size limits get RESOURCE_EXHAUSTED.

Unlike stock TF Serving, this server imports `scann` when it is installed, so it also serves the
ScaNN export. SIGTERM or SIGINT stops it gracefully (in-flight requests get `--grace_seconds`).
With `--enable_batching`, concurrent requests to a signature are merged into one call
(`serving.batching`, TF Serving's server-side batching).
"""

import concurrent.futures
import signal
import ssl
import threading

from absl import app
from absl import flags
from absl import logging
import grpc
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import batching
from serving import model_config
from serving import model_manager
from serving import rest
from serving import servable
from serving import status
from serving import tensors
from tfrs_attenmixer import console

_FLAGS = flags.FLAGS

flags.DEFINE_string("host", "127.0.0.1", "Address to bind the gRPC and REST ports to "
                    "('0.0.0.0' for all interfaces, e.g. in a container).")
flags.DEFINE_integer("port", 8500, "gRPC port.")
flags.DEFINE_integer("rest_api_port", 0, "REST API port; 0 disables the REST API.")
flags.DEFINE_string("model_name", "default", "Name of the model served from --model_base_path.")
flags.DEFINE_string("model_base_path", None, "Folder of the model's integer version folders.")
flags.DEFINE_string("model_config_file", None, "A TF Serving ModelServerConfig text file "
                    "(e.g. serving/models.config); replaces --model_name, --model_base_path, "
                    "--num_versions and --version_labels.")
flags.DEFINE_integer("num_versions", 1, "Serve the newest N versions (TF Serving's latest "
                     "policy); older versions are unloaded.")
flags.DEFINE_string("version_labels", "", "Version labels, e.g. 'stable=1,canary=2', for "
                    "model_spec.version_label.")
flags.DEFINE_float("file_system_poll_wait_seconds", 1.0, "Seconds between polls of the base "
                   "paths for new versions; 0 polls only at startup.")
flags.DEFINE_bool("enable_model_warmup", True, "Run a version's assets.extra/"
                  "tf_serving_warmup_requests before serving it.")
flags.DEFINE_list("required_signatures", [servable.DEFAULT_SIGNATURE], "Signatures a version "
                  "must have to be served.")
flags.DEFINE_integer("max_message_bytes", 16 << 20, "Largest gRPC message (request or reply) "
                     "and REST request body, in bytes.")
flags.DEFINE_integer("max_batch_size", tensors.Limits.max_batch_size, "Largest batch "
                     "(dimension 0 of an input).")
flags.DEFINE_integer("max_session_length", tensors.Limits.max_session_length, "Largest "
                     "dimension 1 of an input of rank >= 2 (session length, candidates).")
flags.DEFINE_bool("enable_batching", False, "Merge concurrent requests to a signature into one "
                  "call (TF Serving's --enable_batching; see serving/batching.py).")
flags.DEFINE_integer("batching_max_batch_size", batching.BatchingOptions.max_batch_size,
                     "Most rows of one merged call (TF Serving's max_batch_size).")
flags.DEFINE_integer("batch_timeout_micros", batching.BatchingOptions.batch_timeout_micros,
                     "How long a request waits for others to fill its batch (0: never).")
flags.DEFINE_integer("num_batch_threads", batching.BatchingOptions.num_batch_threads,
                     "Merged calls running at once.")
flags.DEFINE_list("batching_pad_inputs", list(batching.BatchingOptions.pad_inputs),
                  "Inputs zero-padded in dimension 1 so that different lengths merge (TF "
                  "Serving's pad_variable_length_inputs); 0 must be padding for them.")
flags.DEFINE_integer("grpc_max_threads", 16, "Threads answering gRPC requests.")
flags.DEFINE_integer("max_concurrent_rpcs", 256, "RPCs in progress or queued beyond which new "
                     "ones get RESOURCE_EXHAUSTED.")
flags.DEFINE_integer("rest_api_num_threads", 8, "Threads answering REST requests.")
flags.DEFINE_float("grace_seconds", 10.0, "On SIGTERM/SIGINT, seconds in-flight requests get "
                   "to finish.")
flags.DEFINE_string("ssl_cert", None, "PEM server certificate (chain); with --ssl_key enables "
                    "TLS on both ports.")
flags.DEFINE_string("ssl_key", None, "PEM private key of --ssl_cert.")
flags.DEFINE_string("ssl_client_ca", None, "PEM CA certificate(s): clients must present a "
                    "certificate signed by one of them (mutual TLS).")


def _with_model_spec(method):
  """`method(request)` for a request that has a model_spec (TF Serving answers INVALID_ARGUMENT
  "Missing ModelSpec" to one without)."""

  def checked(request):
    if not request.HasField("model_spec"):
      raise status.invalid_argument("Missing ModelSpec")
    return method(request)

  return checked


def _answer(context, method, *args):
  """Runs `method(*args)`; a failure aborts the RPC with its status code and message."""
  try:
    return method(*args)
  except status.ServingError as error:
    # Only the code and text outlive the except clause: the exception's traceback would keep
    # the frames, and so the version that raised it, alive.
    code, message = error.code, error.message
  except Exception:  # pylint: disable=broad-except  (a bug must not kill the server)
    logging.exception("Unexpected error while answering a request")
    code, message = grpc.StatusCode.INTERNAL, "internal error"
  context.abort(code, message)
  return None  # not reached: abort raises


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata over the managed models."""

  def __init__(self, manager, limits):
    self._manager = manager
    self._limits = limits

  def _predict(self, request):
    return self._manager.resolve(request.model_spec).predict(request, self._limits)

  def _metadata(self, request):
    return self._manager.resolve(request.model_spec).get_model_metadata(request)

  def Predict(self, request, context):  # pylint: disable=invalid-name
    return _answer(context, _with_model_spec(self._predict), request)

  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    return _answer(context, _with_model_spec(self._metadata), request)

  def _unimplemented(self, context, name):
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "%s is not supported by this server" % name)

  def Classify(self, request, context):  # pylint: disable=invalid-name
    self._unimplemented(context, "Classify")

  def Regress(self, request, context):  # pylint: disable=invalid-name
    self._unimplemented(context, "Regress")

  def MultiInference(self, request, context):  # pylint: disable=invalid-name
    self._unimplemented(context, "MultiInference")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus over the managed models."""

  def __init__(self, manager):
    self._manager = manager

  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    return _answer(context, _with_model_spec(self._manager.get_model_status), request)

  def HandleReloadConfigRequest(self, request, context):  # pylint: disable=invalid-name
    context.abort(grpc.StatusCode.UNIMPLEMENTED,
                  "HandleReloadConfigRequest is not supported; restart with a new config")


def _read(path):
  with open(path, "rb") as stream:
    return stream.read()


def _address(host, port):
  return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _configs():
  if _FLAGS.model_config_file:
    return model_config.read_model_config_file(_FLAGS.model_config_file)
  if not _FLAGS.model_base_path:
    raise app.UsageError("give --model_base_path (and --model_name) or --model_config_file")
  return [model_config.from_flags(_FLAGS.model_name, _FLAGS.model_base_path,
                                  _FLAGS.num_versions, _FLAGS.version_labels)]


def _tls():
  """(gRPC server credentials, REST ssl.SSLContext), or (None, None) without --ssl_cert."""
  if not (_FLAGS.ssl_cert or _FLAGS.ssl_key or _FLAGS.ssl_client_ca):
    return None, None
  if not (_FLAGS.ssl_cert and _FLAGS.ssl_key):
    raise app.UsageError("TLS needs both --ssl_cert and --ssl_key")
  client_ca = _read(_FLAGS.ssl_client_ca) if _FLAGS.ssl_client_ca else None
  credentials = grpc.ssl_server_credentials(
      [(_read(_FLAGS.ssl_key), _read(_FLAGS.ssl_cert))], root_certificates=client_ca,
      require_client_auth=client_ca is not None)
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  context.load_cert_chain(_FLAGS.ssl_cert, _FLAGS.ssl_key)
  if client_ca is not None:
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=_FLAGS.ssl_client_ca)
  return credentials, context


def _stop_on_signals():
  """An Event set by SIGTERM or SIGINT."""
  stop = threading.Event()
  def on_signal(signum, _):
    logging.info("Received %s: shutting down", signal.Signals(signum).name)
    stop.set()
  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  return stop


def serve(manager, limits, tls, stop):
  """Runs the gRPC (and REST) servers until `stop` is set; returns the exit code.

  tls: (gRPC server credentials, REST ssl.SSLContext) or (None, None).
  """
  grpc_credentials, rest_ssl = tls
  options = [("grpc.max_receive_message_length", _FLAGS.max_message_bytes),
             ("grpc.max_send_message_length", _FLAGS.max_message_bytes),
             ("grpc.so_reuseport", 0)]
  server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(_FLAGS.grpc_max_threads, thread_name_prefix="grpc"),
      options=options, maximum_concurrent_rpcs=_FLAGS.max_concurrent_rpcs)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(manager, limits), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(manager), server)
  address = _address(_FLAGS.host, _FLAGS.port)
  try:
    if grpc_credentials is None:
      server.add_insecure_port(address)
    else:
      server.add_secure_port(address, grpc_credentials)
  except RuntimeError as error:
    logging.error("Cannot bind the gRPC port %s: %s", address, error)
    return 1

  rest_server = None
  if _FLAGS.rest_api_port:
    try:
      rest_server = rest.RestServer(rest.RestApi(manager, limits), _FLAGS.host,
                                    _FLAGS.rest_api_port, _FLAGS.max_message_bytes,
                                    _FLAGS.rest_api_num_threads, rest_ssl)
    except OSError as error:
      logging.error("Cannot bind the REST port %s: %s",
                    _address(_FLAGS.host, _FLAGS.rest_api_port), error)
      return 1

  server.start()
  logging.info("Running gRPC ModelServer at %s%s", address, " (TLS)" if grpc_credentials else "")
  if rest_server is not None:
    rest_server.start()
    logging.info("Exporting HTTP/REST API at %s", _address(_FLAGS.host, _FLAGS.rest_api_port))
  manager.start_polling(_FLAGS.file_system_poll_wait_seconds)
  while not stop.wait(0.5):
    pass
  server.stop(_FLAGS.grace_seconds).wait()
  if rest_server is not None:
    rest_server.stop()
  manager.stop()
  logging.info("Server stopped")
  return 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
  stop = _stop_on_signals()
  try:
    configs = _configs()
    limits = tensors.Limits(_FLAGS.max_batch_size, _FLAGS.max_session_length)
    batching_options = None
    if _FLAGS.enable_batching:
      batching_options = batching.BatchingOptions(
          _FLAGS.batching_max_batch_size, _FLAGS.batch_timeout_micros, _FLAGS.num_batch_threads,
          tuple(_FLAGS.batching_pad_inputs))
    tls = _tls()
  except (OSError, ValueError, ssl.SSLError) as error:
    logging.error("%s", error)
    return 2
  servable.import_custom_ops()
  if batching_options is not None:
    logging.info("Server-side batching on: %s", batching_options)
  manager = model_manager.ModelManager(configs, limits, _FLAGS.required_signatures,
                                       _FLAGS.enable_model_warmup, batching_options)
  manager.poll()
  for name in manager.names:
    versions = manager.model(name).serving_versions()
    if versions:
      logging.info("Model %s: serving version(s) %s", name, ", ".join(map(str, versions)))
    else:
      logging.warning("Model %s: no version can be served yet; polling for one", name)
  if stop.is_set():
    return 0
  return serve(manager, limits, tls, stop)


if __name__ == "__main__":
  console.start_tensorflow()  # before absl's start, which initialises the devices
  app.run(main)
