"""Session data: raw-file preprocessing, TFRecord writing and tf.data input pipelines."""

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from tfrs_attenmixer import console as _console

_console.quiet_native_logs()
