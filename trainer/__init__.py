"""The distributed trainer: `python -m trainer.main`."""

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
from tfrs_attenmixer import console as _console
from tfrs_attenmixer import packages as _packages

_console.quiet_native_logs()
# Our data, even where the working folder has a package of that name.
_packages.use_own_packages(__file__, ("data",))
