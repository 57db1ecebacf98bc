r"""Asks a TF Serving-compatible server for the next items of a session, over gRPC.

  python -m serving.client --server=127.0.0.1:8500 --model_name=attenmixer --session=12,7,33 \
      [--k=20] [--signature=top_k] [--version=3 | --version_label=stable] \
      [--id_type=auto|int64|string]

Prints one recommendation per line: the item id and its score, separated by a tab. Without `--k`
it calls `serving_default` (the export's default k); with `--k` it calls `top_k` and sends `k`.
Item ids are int64 or strings, as the model's `sessions` input takes them: `--id_type=auto` asks
the server (GetModelMetadata) and, if it cannot say, sends int64 when every id is an integer.
The request is built with `PredictionServiceStub` and TensorProtos made by hand (no TensorFlow
runtime), so the same code queries stock `tensorflow_model_server` and `serving.server` alike.
"""

import sys

from absl import app
from absl import flags
import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import tensors

_FLAGS = flags.FLAGS

flags.DEFINE_string("server", "127.0.0.1:8500", "host:port of the gRPC model server.")
flags.DEFINE_string("model_name", "attenmixer", "Model name (model_spec.name).")
flags.DEFINE_list("session", None, "Item ids of the session, oldest first: ID,ID,ID.")
flags.DEFINE_enum("id_type", "auto", ["auto", "int64", "string"], "Type of the item ids the "
                  "model takes; auto: the model's signature, as the server describes it.")
flags.DEFINE_integer("k", None, "Number of recommendations; calls the top_k signature.")
flags.DEFINE_string("signature", "", "Signature name; default: top_k with --k, else "
                    "serving_default.")
flags.DEFINE_integer("version", None, "Ask for this model version.")
flags.DEFINE_string("version_label", None, "Ask for the version of this label (e.g. stable).")
flags.DEFINE_float("timeout", 10.0, "RPC deadline in seconds.")
flags.DEFINE_integer("max_message_bytes", 16 << 20, "Largest reply accepted, in bytes.")
flags.DEFINE_string("ssl_ca", None, "PEM CA certificate(s) to verify the server with (TLS).")
flags.DEFINE_string("ssl_client_cert", None, "PEM client certificate, for mutual TLS.")
flags.DEFINE_string("ssl_client_key", None, "PEM private key of --ssl_client_cert.")
flags.DEFINE_string("ssl_target_name", None, "Expected server name in its certificate, if it "
                    "differs from the host of --server.")
flags.mark_flag_as_required("session")
flags.register_validator("k", lambda k: k is None or k > 0, "--k must be positive")


def build_request(model_name, session, k=None, signature="", version=None, version_label=None,
                  id_dtype=None):
  """A PredictRequest for one session (item ids, oldest first), asking for `k` items if given.

  `id_dtype`: types_pb2.DT_INT64 or DT_STRING; default DT_INT64 when every id is an integer.
  """
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature or ("top_k" if k is not None else "")
  if version is not None:
    request.model_spec.version.value = version
  elif version_label:
    request.model_spec.version_label = version_label
  if id_dtype is None:
    id_dtype = types_pb2.DT_INT64 if all(_is_integer(item) for item in session) else (
        types_pb2.DT_STRING)
  values = (np.asarray([[int(item) for item in session]], np.int64)
            if id_dtype == types_pb2.DT_INT64 else
            np.asarray([[str(item).encode("utf-8") for item in session]], object))
  request.inputs["sessions"].CopyFrom(tensors.from_ndarray(values, id_dtype))
  if k is not None:
    request.inputs["k"].CopyFrom(tensors.from_ndarray(np.int32(k), types_pb2.DT_INT32))
  return request


def _is_integer(item):
  try:
    int(item)
  except ValueError:
    return False
  return True


def session_id_dtype(stub, model_name, signature="", version=None, version_label=None,
                     timeout=10.0):
  """The DataType of the `sessions` input of the model's signature (GetModelMetadata), or None
  when the server does not say."""
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
  request.model_spec.name = model_name
  if version is not None:
    request.model_spec.version.value = version
  elif version_label:
    request.model_spec.version_label = version_label
  try:
    response = stub.GetModelMetadata(request, timeout=timeout)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
  except (grpc.RpcError, KeyError):
    return None
  definition = signatures.signature_def.get(signature or "serving_default")
  if definition is None or "sessions" not in definition.inputs:
    return None
  return definition.inputs["sessions"].dtype


def recommendations(response):
  """[(item id, score)] of the first session of a PredictResponse (`item_ids`, `scores`); string
  ids as str."""
  item_ids = tensors.to_ndarray(response.outputs["item_ids"], "item_ids")
  scores = tensors.to_ndarray(response.outputs["scores"], "scores")
  ids = [item.decode("utf-8", "replace") if isinstance(item, bytes) else item
         for item in item_ids[0].tolist()]
  return list(zip(ids, scores[0].tolist()))


def channel(target, max_message_bytes=16 << 20, ssl_ca=None, ssl_client_cert=None,
            ssl_client_key=None, ssl_target_name=None):
  """A gRPC channel to `target`: TLS when a CA or client certificate is given, else plaintext."""
  options = [("grpc.max_receive_message_length", max_message_bytes),
             ("grpc.max_send_message_length", max_message_bytes)]
  if not (ssl_ca or ssl_client_cert):
    return grpc.insecure_channel(target, options=options)
  def read(path):
    if not path:
      return None
    with open(path, "rb") as stream:
      return stream.read()
  if ssl_target_name:
    options.append(("grpc.ssl_target_name_override", ssl_target_name))
  credentials = grpc.ssl_channel_credentials(read(ssl_ca), read(ssl_client_key),
                                             read(ssl_client_cert))
  return grpc.secure_channel(target, credentials, options=options)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
  session = [item.strip() for item in _FLAGS.session]
  with channel(_FLAGS.server, _FLAGS.max_message_bytes, _FLAGS.ssl_ca, _FLAGS.ssl_client_cert,
               _FLAGS.ssl_client_key, _FLAGS.ssl_target_name) as grpc_channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel)
    signature = _FLAGS.signature or ("top_k" if _FLAGS.k is not None else "")
    id_dtype = {"int64": types_pb2.DT_INT64, "string": types_pb2.DT_STRING}.get(_FLAGS.id_type)
    if id_dtype is None:
      id_dtype = session_id_dtype(stub, _FLAGS.model_name, signature, _FLAGS.version,
                                  _FLAGS.version_label, _FLAGS.timeout)
    if id_dtype == types_pb2.DT_INT64 and not all(map(_is_integer, session)):
      raise app.UsageError("the model takes integer item ids; --session has others: "
                           + ",".join(item for item in session if not _is_integer(item)))
    request = build_request(_FLAGS.model_name, session, _FLAGS.k, signature, _FLAGS.version,
                            _FLAGS.version_label, id_dtype)
    try:
      response = stub.Predict(request, timeout=_FLAGS.timeout)
    except grpc.RpcError as error:
      print("error: %s: %s" % (error.code().name, error.details()), file=sys.stderr)
      return 1
  print("# model %s version %d signature %s" % (
      response.model_spec.name, response.model_spec.version.value,
      response.model_spec.signature_name), file=sys.stderr)
  if "unknown_items" in response.outputs:
    unknown = int(tensors.to_ndarray(response.outputs["unknown_items"], "unknown_items")[0])
    if unknown:
      print("# %d item ids of the session are unknown to the model" % unknown, file=sys.stderr)
  for item_id, score in recommendations(response):
    print("%s\t%.6g" % (item_id, score))
  return 0


if __name__ == "__main__":
  app.run(main)
