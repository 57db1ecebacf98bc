r"""Asks a TF Serving-compatible server for the next items of a session, over gRPC.

  python -m serving.client --server=127.0.0.1:8500 --model_name=attenmixer --session=12,7,33 \
      [--k=20] [--signature=top_k] [--version=3 | --version_label=stable]

Prints one recommendation per line: the item id and its score, separated by a tab. Without `--k`
it calls `serving_default` (the export's default k); with `--k` it calls `top_k` and sends `k`.
The request is built with `PredictionServiceStub` and TensorProtos made by hand (no TensorFlow
runtime), so the same code queries stock `tensorflow_model_server` and `serving.server` alike.
"""

import sys

from absl import app
from absl import flags
import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import tensors

_FLAGS = flags.FLAGS

flags.DEFINE_string("server", "127.0.0.1:8500", "host:port of the gRPC model server.")
flags.DEFINE_string("model_name", "attenmixer", "Model name (model_spec.name).")
flags.DEFINE_list("session", None, "Item ids of the session, oldest first: ID,ID,ID.")
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


def build_request(model_name, session, k=None, signature="", version=None, version_label=None):
  """A PredictRequest for one session (item ids, oldest first), asking for `k` items if given."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature or ("top_k" if k is not None else "")
  if version is not None:
    request.model_spec.version.value = version
  elif version_label:
    request.model_spec.version_label = version_label
  request.inputs["sessions"].CopyFrom(
      tensors.from_ndarray(np.asarray([session], dtype=np.int64), types_pb2.DT_INT64))
  if k is not None:
    request.inputs["k"].CopyFrom(tensors.from_ndarray(np.int32(k), types_pb2.DT_INT32))
  return request


def recommendations(response):
  """[(item id, score)] of the first session of a PredictResponse (`item_ids`, `scores`)."""
  item_ids = tensors.to_ndarray(response.outputs["item_ids"], "item_ids")
  scores = tensors.to_ndarray(response.outputs["scores"], "scores")
  return list(zip(item_ids[0].tolist(), scores[0].tolist()))


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
  try:
    session = [int(item) for item in _FLAGS.session]
  except ValueError:
    raise app.UsageError("--session must be integer item ids: ID,ID,ID") from None
  request = build_request(_FLAGS.model_name, session, _FLAGS.k, _FLAGS.signature,
                          _FLAGS.version, _FLAGS.version_label)
  with channel(_FLAGS.server, _FLAGS.max_message_bytes, _FLAGS.ssl_ca, _FLAGS.ssl_client_cert,
               _FLAGS.ssl_client_key, _FLAGS.ssl_target_name) as grpc_channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc_channel)
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
    print("%d\t%.6g" % (item_id, score))
  return 0


if __name__ == "__main__":
  app.run(main)
