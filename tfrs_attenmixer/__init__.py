"""tfrs-attenmixer: the Atten-Mixer session recommender as TensorFlow Recommenders layers.

TensorFlow Recommenders 0.7.7 needs Keras 2 (the ``tf-keras`` package). TensorFlow picks its
Keras when it is first imported, so this module selects Keras 2 before anything imports
TensorFlow: ``import tfrs_attenmixer`` works in a fresh process without the user setting
``TF_USE_LEGACY_KERAS`` themselves.
"""

import os as _os
import sys as _sys

if "tensorflow" in _sys.modules and _os.environ.get("TF_USE_LEGACY_KERAS") != "1":
  # TensorFlow was imported first: it still resolves ``tf.keras`` lazily, so the variable is
  # enough unless Keras 3 was already bound, which we cannot undo.
  if "keras.src" in _sys.modules and "tf_keras" not in _sys.modules:
    raise ImportError(
        "tfrs_attenmixer needs Keras 2 (tf-keras), but Keras 3 was already loaded by TensorFlow. "
        "Import tfrs_attenmixer before tensorflow, or set TF_USE_LEGACY_KERAS=1.")
_os.environ["TF_USE_LEGACY_KERAS"] = "1"

__version__ = "0.1.0"

# Public API, imported on first use (PEP 562): `import tfrs_attenmixer` stays cheap and
# TensorFlow-free until a layer is touched, so configuration can be checked before TF starts.
_EXPORTS = {
    "attenmixer": ["AttenMixer"],
    "config": ["AttenMixerOptions", "ModelConfig", "VARIANTS"],
    "encoders": ["EmbeddingEncoder", "GatedGraphCell", "ItemEncoder", "SessionGraphEncoder",
                 "SGNNHNEncoder", "SRGNNEncoder"],
    "losses": ["SampledSoftmaxLoss", "full_softmax_loss"],
    "metrics": ["HitRate", "MRR", "NDCG", "RankMetric", "ranking_metrics", "target_ranks"],
    "model": ["QueryTower", "SessionRetrievalModel", "build_encoder", "build_readout"],
    "readouts": ["LastItemReadout", "MeanReadout", "Readout", "SRGNNAttentionReadout"],
    "session_graph": ["SessionGraph"],  # the function `session_graph` would shadow its module
    "topk": ["PortableANN", "ScaNN", "build_index", "retrieval_recall"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
  if name not in _MODULE_OF:
    raise AttributeError(f"module 'tfrs_attenmixer' has no attribute {name!r}")
  import importlib  # pylint: disable=g-import-not-at-top
  value = getattr(importlib.import_module(f"tfrs_attenmixer.{_MODULE_OF[name]}"), name)
  globals()[name] = value
  return value


def __dir__():
  return sorted(list(globals()) + __all__)
