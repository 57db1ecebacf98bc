"""SavedModel export, top-K indexes and a TF Serving-compatible gRPC server."""

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from tfrs_attenmixer import console as _console
from tfrs_attenmixer import packages as _packages

_console.quiet_native_logs()
# Our data and trainer, even where the working folder has packages of those names.
_packages.use_own_packages(__file__, ("data", "trainer"))
