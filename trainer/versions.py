"""The version folders of an exported model: `<model_dir>/<version>/`, as TF Serving expects.

Versions are integer folder names. A version is written into a hidden temporary folder beside them
(`make_temporary`: `.tmp-export-<pid>-*`, never a number, so a server polling `model_dir` ignores
it) and renamed into place once complete (`publish_version`); a published version is never
replaced. A temporary folder left by a killed exporter (its process no longer exists) is removed
by `remove_abandoned_temporaries`.
"""

import os
import shutil
import tempfile
from typing import List, Optional

from absl import logging

from trainer.export_errors import ExportError

TEMPORARY_PREFIX = ".tmp-export-"


def existing_versions(model_dir: str) -> List[int]:
  """The version numbers (integer folder names) in `model_dir`, ascending."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(name) for name in os.listdir(model_dir)
                if name.isdigit() and os.path.isdir(os.path.join(model_dir, name)))


def make_temporary(model_dir: str) -> str:
  """A new hidden temporary folder in `model_dir` (created), named after this process."""
  return tempfile.mkdtemp(dir=model_dir, prefix=f"{TEMPORARY_PREFIX}{os.getpid()}-")


def publish_version(temporary: str, model_dir: str, version: Optional[int]) -> str:
  """Renames the finished `temporary` folder to its version folder (the next free one if None).

  Returns the version folder's path.

  Raises:
    ExportError: `version` exists (versions are never replaced), or no free number was found.
  """
  for _ in range(100):
    number = version if version is not None else max(existing_versions(model_dir), default=0) + 1
    path = os.path.join(model_dir, str(number))
    if not os.path.exists(path):
      try:
        os.rename(temporary, path)
        return path
      except OSError:  # another exporter took the number first
        pass
    if version is not None:
      raise ExportError(f"{path} exists; versions are never replaced")
  raise ExportError(f"could not find a free version number in {model_dir}")


def remove_abandoned_temporaries(model_dir: str) -> None:
  """Deletes the temporary folders of exporters that died (SIGKILL) before finishing."""
  for name in os.listdir(model_dir):
    owner = name[len(TEMPORARY_PREFIX):].split("-", 1)[0]
    if name.startswith(TEMPORARY_PREFIX) and owner.isdigit() and not _alive(int(owner)):
      logging.info("Removing %s, left by exporter process %s that no longer runs", name, owner)
      shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True
