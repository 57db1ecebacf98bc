"""The distributed trainer: `python -m trainer.main`."""

import os as _os

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# TensorFlow's C++ runtime logs every end of an input pipeline as a warning; keep its errors.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
