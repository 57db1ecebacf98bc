"""The project's top-level packages (`data`, `trainer`, `serving`) from this installation.

Their names are common: a working folder (the first entry of `sys.path` under `python -m`) may
hold a package of the same name, e.g. a user's own `data/`, which Python would import instead of
ours. `use_own_packages` loads ours by path first, so such a folder is harmless to the commands.
"""

import importlib.util
import os
import sys
from typing import Sequence


def use_own_packages(anchor_file: str, names: Sequence[str]) -> None:
  """Imports each package of `names` from the folder that holds the package of `anchor_file`.

  Args:
    anchor_file: `__file__` of one of the project's top-level packages.
    names: its sibling packages to import from there.

  Raises:
    ImportError: a package of one of `names` was imported from elsewhere already (a process that
      imported a user's package of that name before the project's commands).
  """
  root = os.path.dirname(os.path.dirname(os.path.abspath(anchor_file)))
  for name in names:
    init = os.path.join(root, name, "__init__.py")
    loaded = sys.modules.get(name)
    if loaded is not None:
      if os.path.abspath(getattr(loaded, "__file__", None) or "") != init:
        raise ImportError(
            f"the package {name!r} was imported from {getattr(loaded, '__file__', loaded)}, not "
            f"from tfrs-attenmixer ({os.path.dirname(init)}); import tfrs-attenmixer's packages "
            f"first, or rename the other {name!r}")
      continue
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[name]
      raise
