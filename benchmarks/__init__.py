"""Long-running measurements: each prints its numbers and records them under results/."""

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from tfrs_attenmixer import console as _console
from tfrs_attenmixer import packages as _packages

_console.quiet_native_logs()
# Our data, trainer and serving, even where the working folder has packages of those names.
_packages.use_own_packages(__file__, ("data", "trainer", "serving"))
