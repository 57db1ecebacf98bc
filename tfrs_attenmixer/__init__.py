"""tfrs-attenmixer: the Atten-Mixer session recommender as TensorFlow Recommenders layers.

TensorFlow Recommenders 0.7.7 needs Keras 2 (the ``tf-keras`` package). TensorFlow picks its
Keras when it is first imported, so this module selects Keras 2 before anything imports
TensorFlow: ``import tfrs_attenmixer`` works in a fresh process without the user setting
``TF_USE_LEGACY_KERAS`` themselves.
"""

import os as _os
import sys as _sys

if "tensorflow" in _sys.modules and _os.environ.get("TF_USE_LEGACY_KERAS") != "1":
  _tf = _sys.modules["tensorflow"]
  # TensorFlow was imported first: it still resolves ``tf.keras`` lazily, so the variable is
  # enough unless Keras 3 was already bound, which we cannot undo.
  if "keras.src" in _sys.modules and "tf_keras" not in _sys.modules:
    raise ImportError(
        "tfrs_attenmixer needs Keras 2 (tf-keras), but Keras 3 was already loaded by TensorFlow. "
        "Import tfrs_attenmixer before tensorflow, or set TF_USE_LEGACY_KERAS=1.")
_os.environ["TF_USE_LEGACY_KERAS"] = "1"

__version__ = "0.1.0"
