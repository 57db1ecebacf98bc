"""A quiet console for the project's commands: TensorFlow's internals out of the user's way.

- `quiet_native_logs()` (the command packages call it on import, before TensorFlow's): the C++
  runtime's INFO and WARNING lines off (`TF_CPP_MIN_LOG_LEVEL=2`) unless the user set the
  variable; its errors stay.
- `start_tensorflow()` (each command, before any TensorFlow op): initialises the devices and
  compiles a first XLA function (`first_compilation`, which a trainer runs once its distribution
  strategy is configured) with two native lines dropped (the error a CPU-only machine
  always gets from the CUDA platform, "failed call to cuInit", and XLA's once-per-process "Compiled
  cluster using XLA!"), every other line of that moment kept, and hides INFO records that
  TensorFlow's, Keras' and TFRS's Python modules send through absl logging (checkpoint sharding,
  SavedModel tracing). Warnings and errors of every module, and all of the project's own records,
  are shown.
"""

import contextlib
import logging as std_logging
import os
import sys
import tempfile
from typing import Callable, Iterator, Optional

from absl import logging

# Packages whose INFO records are internals (their WARNING and above are kept).
_DEPENDENCIES = ("tensorflow", "tf_keras", "keras", "tensorflow_recommenders", "scann")
# Native lines of TensorFlow's start that say nothing to a user: the CUDA platform's error on a
# machine without a CUDA driver, and XLA's once-per-process note of its first compilation.
_STARTUP_NOISE = ("failed call to cuInit", "Compiled cluster using XLA",
                  "All log messages before absl::InitializeLog() is called")


def quiet_native_logs() -> None:
  """TensorFlow's C++ INFO and WARNING lines off unless `TF_CPP_MIN_LOG_LEVEL` is set; effective
  only before TensorFlow is imported."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _native_stderr_without(drop: Callable[[str], bool]) -> Iterator[None]:
  """Captures what native code writes to file descriptor 2 inside the block and writes it back
  to `sys.stderr` without the lines for which `drop` is true."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      for line in captured.read().decode(errors="replace").splitlines(keepends=True):
        if not drop(line):
          sys.stderr.write(line)
      sys.stderr.flush()


def first_compilation() -> None:
  """Compiles a first XLA function, its once-per-process native note dropped (this starts
  TensorFlow's runtime)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with _native_stderr_without(lambda line: any(noise in line for noise in _STARTUP_NOISE)):
    tf.function(lambda x: x + 1, jit_compile=True)(tf.constant(0))


class _DependencyInfoFilter(std_logging.Filter):
  """Drops records below WARNING that come from a module of `_DEPENDENCIES`."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    parts = os.path.normpath(record.pathname).split(os.sep)
    return not any(package in parts for package in _DEPENDENCIES)


def start_tensorflow(configure_devices: Optional[Callable[[], None]] = None,
                     compile_first: bool = True) -> None:
  """Initialises TensorFlow's devices quietly and filters its INFO records (see the module).

  Args:
    configure_devices: called once the physical devices are listed and before the first op
      starts the runtime (e.g. to split the CPU into logical devices).
    compile_first: also run `first_compilation()`, which starts the runtime; False where
      something must be configured before (a `MultiWorkerMirroredStrategy`'s collectives).
  """
  # Imported inside the block: once absl's flags are parsed, importing TensorFlow initialises
  # the devices.
  with _native_stderr_without(lambda line: any(noise in line for noise in _STARTUP_NOISE)):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()
    if configure_devices is not None:
      configure_devices()
  if compile_first:
    first_compilation()
  tf.get_logger().setLevel(std_logging.WARNING)  # TensorFlow's own logger (asset writing, ...)
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _DependencyInfoFilter) for f in handler.filters):
    handler.addFilter(_DependencyInfoFilter())
