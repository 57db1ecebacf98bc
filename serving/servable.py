"""`Servable`: one loaded and validated SavedModel version, answering Predict and GetModelMetadata.

The server is generic over signatures: a version serves the signatures of its SavedModel (read
from `loaded.signatures`, with their TensorSpecs), and each request is checked against them before
any data is decoded (input aliases, dtype, rank, fixed dimensions, then the size limits).

A version is only served once `Servable.load` has (1) loaded the SavedModel, (2) found every
required signature and, when another version is being served, the same signatures with the same
input and output dtypes and ranks, and (3) run its warm-up requests
(`assets.extra/tf_serving_warmup_requests`, a TFRecord file of `PredictionLog`s, as in TF Serving)
through the same Predict path the clients use.
"""

import dataclasses
import os
from typing import Mapping, Optional, Tuple

from absl import logging
from google.protobuf import message
import grpc

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from data import warmup
from serving import batching as batching_lib
from serving import status
from serving import tensors

DEFAULT_SIGNATURE = "serving_default"  # as tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
SERVE_TAG = "serve"
# TF Serving reads at most this many warm-up records and refuses a version that has more.
MAX_WARMUP_RECORDS = 1000
SIGNATURE_DEF_FIELD = "signature_def"


def import_custom_ops():
  """Imports `scann` when installed, so SavedModels holding ScaNN ops can be loaded."""
  try:
    import scann  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    logging.info("scann is not installed: SavedModels with ScaNN ops cannot be served")
    return False
  return True


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """The dtype (a DataType) and shape (None for an unknown dimension or rank) of a tensor."""
  dtype: int
  shape: Optional[Tuple[Optional[int], ...]]

  @classmethod
  def from_tf(cls, spec):
    shape = spec.shape
    return cls(spec.dtype.as_datatype_enum,
               None if shape.rank is None else tuple(shape.as_list()))

  @property
  def shape_text(self):
    """'[?, 20]'; '<unknown rank>' when the rank is unknown."""
    return "<unknown rank>" if self.shape is None else "[%s]" % ", ".join(
        "?" if size is None else str(size) for size in self.shape)

  def __str__(self):
    return "%s %s" % (tensors.dtype_name(self.dtype), self.shape_text)

  def accepts(self, dtype, shape):
    """None if a tensor of `dtype` and `shape` fits this spec, else the reason."""
    if dtype != self.dtype:
      return "to be %s but %s is provided" % (tensors.dtype_name(self.dtype),
                                             tensors.dtype_name(dtype))
    if self.shape is None:
      return None
    if len(shape) != len(self.shape):
      return "to have rank %d (shape %s) but rank %d (shape %s) is provided" % (
          len(self.shape), self.shape_text, len(shape), list(shape))
    for axis, (want, got) in enumerate(zip(self.shape, shape)):
      if want is not None and want != got:
        return "to have size %d in dimension %d but shape %s is provided" % (want, axis,
                                                                             list(shape))
    return None


class Signature:
  """One signature of a loaded version: its input and output TensorSpecs and its function.

  With `batching` options, concurrent calls of `run` are merged (`serving.batching`).
  """

  def __init__(self, name, function, batching=None):
    self.name = name
    self._function = function
    self._batcher = None
    if batching is not None:
      self._batcher = batching_lib.Batcher(self._call, batching, name)
    _, kwargs = function.structured_input_signature
    self.inputs: Mapping[str, TensorSpec] = {
        alias: TensorSpec.from_tf(spec) for alias, spec in kwargs.items()}
    outputs = function.structured_outputs
    if not isinstance(outputs, dict):
      raise status.failed_precondition(
          "signature %r does not return a dict of named outputs" % name)
    self.outputs: Mapping[str, TensorSpec] = {
        alias: TensorSpec.from_tf(tensor) for alias, tensor in outputs.items()}

  def check_aliases(self, aliases):
    """INVALID_ARGUMENT unless `aliases` are exactly this signature's inputs (TF Serving's text)."""
    sent, expected = set(aliases), set(self.inputs)
    if sent != expected:
      raise status.invalid_argument(
          "input size does not match signature: %d!=%d len({%s}) != len({%s}). Sent extra: {%s}. "
          "Missing but required: {%s}." % (
              len(sent), len(expected), ",".join(map(status.quote, sorted(sent))),
              ",".join(sorted(expected)), ",".join(map(status.quote, sorted(sent - expected))),
              ",".join(sorted(expected - sent))))

  def check_input(self, alias, dtype, shape):
    """INVALID_ARGUMENT unless a tensor of `dtype` and `shape` fits input `alias`."""
    reason = self.inputs[alias].accepts(dtype, shape)
    if reason:
      raise status.invalid_argument("Expects arg[%s] of signature %s %s" % (
          status.quote(alias), status.quote(self.name), reason))

  def output_keys(self, output_filter):
    """The outputs to return: `output_filter` checked (unknown or repeated aliases), else all."""
    if not output_filter:
      return sorted(self.outputs)
    keys = []
    for alias in output_filter:
      if alias not in self.outputs:
        raise status.invalid_argument(
            "output tensor alias not found in signature: %s Outputs expected to be in the set "
            "{%s}." % (status.quote(alias), ",".join(sorted(self.outputs))))
      if alias in keys:
        raise status.invalid_argument("duplicate output tensor alias: %s" % status.quote(alias))
      keys.append(alias)
    return keys

  def run(self, arrays, keys):
    """Runs the signature on numpy `arrays` (checked inputs); returns {alias: array} for `keys`."""
    if self._batcher is not None:
      return self._batcher.run(arrays, keys)
    return self._call(arrays, keys)

  def _call(self, arrays, keys):
    try:
      outputs = self._function(**{alias: tf.constant(array) for alias, array in arrays.items()})
      return {alias: outputs[alias].numpy() for alias in keys}
    except tf.errors.OpError as error:
      raise status.ServingError.from_exception(error) from None
    except (TypeError, ValueError) as error:
      raise status.invalid_argument(str(error)) from None

  def incompatibility(self, served):
    """None if this signature can replace `served` (same inputs, outputs, dtypes, ranks)."""
    def rank(spec):
      return None if spec.shape is None else len(spec.shape)
    for kind, new, old in (("input", self.inputs, served.inputs),
                           ("output", self.outputs, served.outputs)):
      if set(new) != set(old) and (kind == "input" or not set(old) <= set(new)):
        return "signature %r has %ss {%s}, the served version has {%s}" % (
            self.name, kind, ",".join(sorted(new)), ",".join(sorted(old)))
      for alias, spec in old.items():
        if new[alias].dtype != spec.dtype or rank(new[alias]) != rank(spec):
          return "signature %r: %s %r is %s, the served version's is %s" % (
              self.name, kind, alias, new[alias], spec)
    return None


def _read_signature_defs(path):
  """The `serve` MetaGraph's SignatureDefs of the SavedModel at `path`, for GetModelMetadata."""
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(path, "saved_model.pb"), "rb") as stream:
    try:
      saved_model.ParseFromString(stream.read())
    except message.DecodeError as error:
      raise status.ServingError(grpc.StatusCode.DATA_LOSS, "cannot parse %s: %s" % (
          os.path.join(path, "saved_model.pb"), error)) from None
  for meta_graph in saved_model.meta_graphs:
    if SERVE_TAG in meta_graph.meta_info_def.tags:
      return get_model_metadata_pb2.SignatureDefMap(signature_def=meta_graph.signature_def)
  raise status.failed_precondition("%s has no MetaGraph tagged %r" % (path, SERVE_TAG))


class Servable:
  """One version of a model, loaded and checked; safe to call from many threads at once."""

  def __init__(self, model_name, version, path, loaded, signatures, signature_defs):
    self.model_name = model_name
    self.version = version
    self.path = path
    self._loaded = loaded  # keeps the variables of the signature functions alive
    self.signatures: Mapping[str, Signature] = signatures
    self._signature_defs = signature_defs

  @classmethod
  def load(cls, model_name, version, path, limits, required_signatures=(DEFAULT_SIGNATURE,),
           served=None, run_warmup=True, batching=None):
    """Loads and validates version `version` from `path`.

    Raises ServingError (NOT_FOUND: no saved_model.pb, DATA_LOSS: unreadable, FAILED_PRECONDITION:
    signatures missing or changed, or the code of a failed warm-up request), TensorFlow's error
    when the SavedModel does not load (missing variables, unknown ops), or another exception.

    served: the Servable currently answering for this model, whose signatures the new version
      must keep (same names, input and output dtypes and ranks).
    batching: `serving.batching.BatchingOptions` to merge concurrent requests, or None.
    """
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
      raise status.not_found("no saved_model.pb in %s" % path)
    signature_defs = _read_signature_defs(path)
    loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
    signatures = {name: Signature(name, function, batching)
                  for name, function in loaded.signatures.items()}
    if not signatures:
      raise status.failed_precondition("the SavedModel has no signatures")
    missing = sorted(set(required_signatures) - set(signatures))
    if missing:
      raise status.failed_precondition(
          "the SavedModel lacks required signature(s) %s; it has %s" % (
              ", ".join(missing), ", ".join(sorted(signatures))))
    if served is not None:
      for name, old in sorted(served.signatures.items()):
        if name not in signatures:
          raise status.failed_precondition("signature %r of the served version %d is missing" % (
              name, served.version))
        reason = signatures[name].incompatibility(old)
        if reason:
          raise status.failed_precondition("%s (version %d)" % (reason, served.version))
    servable = cls(model_name, version, path, loaded, signatures, signature_defs)
    if run_warmup:
      servable._warm_up(limits)
    return servable

  def _warm_up(self, limits):
    """Runs the warm-up PredictRequests of the SavedModel; raises ServingError if one fails."""
    path = warmup.warmup_path(self.path)
    if not os.path.exists(path):
      return
    count = skipped = 0
    for record in tf.data.TFRecordDataset(path):
      count += 1
      if count > MAX_WARMUP_RECORDS:
        raise status.invalid_argument("%s has more than %d warm-up records" % (
            warmup.WARMUP_FILE, MAX_WARMUP_RECORDS))
      try:
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
      except message.DecodeError as error:
        raise status.ServingError(grpc.StatusCode.DATA_LOSS, "warm-up record %d of %s: %s" % (
            count, warmup.WARMUP_FILE, error)) from None
      if log.WhichOneof("log_type") != "predict_log":
        skipped += 1  # Classify, Regress and MultiInference are not served here.
        continue
      try:
        self.predict(log.predict_log.request, limits)
      except status.ServingError as error:
        raise status.ServingError(error.code, "warm-up request %d of %s failed: %s" % (
            count, warmup.WARMUP_FILE, error.message)) from None
    logging.info("Model %s version %d: ran %d warm-up requests (%d not Predict, skipped)",
                 self.model_name, self.version, count - skipped, skipped)

  def signature(self, name):
    """The signature `name` ('' = serving_default); FAILED_PRECONDITION if there is none."""
    name = name or DEFAULT_SIGNATURE
    signature = self.signatures.get(name)
    if signature is None:
      raise status.failed_precondition("Serving signature key %s not found." % status.quote(name))
    return signature

  def predict(self, request, limits):
    """Answers a PredictRequest (its model spec already resolved to this version)."""
    signature = self.signature(request.model_spec.signature_name)
    signature.check_aliases(request.inputs.keys())
    keys = signature.output_keys(request.output_filter)
    arrays = {}
    for alias in sorted(request.inputs):
      proto = request.inputs[alias]
      dtype, shape = tensors.header(proto, alias)
      signature.check_input(alias, dtype, shape)
      limits.check(alias, shape)
      arrays[alias] = tensors.to_ndarray(proto, alias, limits.max_elements)
    outputs = signature.run(arrays, keys)
    response = predict_pb2.PredictResponse()
    self.fill_model_spec(response.model_spec, signature.name)
    for alias, array in outputs.items():
      response.outputs[alias].CopyFrom(
          tensors.from_ndarray(array, signature.outputs[alias].dtype))
    return response

  def run(self, signature, arrays, output_filter, limits):
    """Runs `signature` on numpy `arrays` (the REST path); returns {alias: array}."""
    signature.check_aliases(arrays.keys())
    keys = signature.output_keys(output_filter)
    for alias, array in arrays.items():
      signature.check_input(alias, tensors.dtype_of(array), array.shape)
      limits.check(alias, array.shape)
    return signature.run(arrays, keys)

  def get_model_metadata(self, request):
    """Answers a GetModelMetadataRequest: the SignatureDefs, TF Serving's only metadata field."""
    if not request.metadata_field:
      raise status.invalid_argument(
          "GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
      if field != SIGNATURE_DEF_FIELD:
        raise status.invalid_argument("Metadata field %s is not supported" % status.quote(field))
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    self.fill_model_spec(response.model_spec)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(self._signature_defs)
    return response

  @property
  def signature_defs(self):
    return self._signature_defs

  def fill_model_spec(self, model_spec, signature_name=None):
    model_spec.name = self.model_name
    model_spec.version.value = self.version
    if signature_name is not None:
      model_spec.signature_name = signature_name

