"""TensorFlow Serving warm-up requests, written into every exported SavedModel.

TF Serving replays `<version>/assets.extra/tf_serving_warmup_requests` (a TFRecord file of
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog`) when it loads a version, before the
version takes traffic, so the first real request does not pay for graph optimisation and
memory allocation. Each record holds a `predict_log.request`: a `PredictRequest` for one
signature with realistic sessions (raw item ids, padded) taken from the training data.

The export writes the file (`trainer.export`); the push validation (`trainer.push`) and the model
server (`serving.servable`) replay it: the format belongs to `data`, which all of them import.
"""

import os
from typing import List

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from data.prepared import PreparedDataset
from data.tfrecord import parse_sessions

EXTRA_ASSETS_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


def warmup_path(saved_model_dir: str) -> str:
  return os.path.join(saved_model_dir, EXTRA_ASSETS_DIR, WARMUP_FILE)


def sample_sessions(prepared: PreparedDataset, raw_ids: np.ndarray,
                    count: int = 8) -> np.ndarray:
  """The first `count` training sessions as raw ids [count, longest], right-padded with the
  padding id.

  `raw_ids` [N + 1] maps item indices to raw ids (entry 0 is the padding id): int64 (padding 0)
  or an object array of str (padding ""); the result has its dtype.
  """
  batch = next(iter(tf.data.TFRecordDataset(prepared.files("train")).batch(count)))
  sessions = parse_sessions(batch).to_tensor().numpy()
  return raw_ids[sessions]


def write_warmup_requests(saved_model_dir: str, model_name: str, sessions: np.ndarray,
                          signature_name: str = "serving_default") -> str:
  """Writes two requests (the first session alone, then all `sessions`); returns the file path.

  Args:
    saved_model_dir: the SavedModel version folder.
    model_name: the name TF Serving serves the model under (`ModelSpec.name`).
    sessions: [batch, length] raw item ids, int64 or str (`sample_sessions`).
    signature_name: the signature the requests call; its only input must be `sessions`.
  """
  path = warmup_path(saved_model_dir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with tf.io.TFRecordWriter(path) as writer:
    for batch in (sessions[:1], sessions):
      request = predict_pb2.PredictRequest()
      request.model_spec.name = model_name
      request.model_spec.signature_name = signature_name
      request.inputs["sessions"].CopyFrom(tf.make_tensor_proto(
          batch, dtype=tf.string if batch.dtype == object else tf.int64))  # str: UTF-8
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
  return path


def read_warmup_requests(saved_model_dir: str) -> List[prediction_log_pb2.PredictionLog]:
  """The warm-up records of a SavedModel version, parsed."""
  return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
          for record in tf.data.TFRecordDataset(warmup_path(saved_model_dir))]

