"""Version discovery, loading, switching and unloading of the served models (TF Serving's manager).

Each model's base path holds one folder per integer version (`<base_path>/<version>/`; writers
create a version by atomic rename). A poll lists the versions on disk, picks those to serve with
the model's policy (by default the newest one), loads and validates the new ones
(`Servable.load`: the SavedModel, its signatures, its warm-up requests) and then switches.

Switching replaces the model's map of serving versions as a whole. A request resolves its version
once and keeps that `Servable` until it answers, so in-flight requests finish on the version they
started with; an unloaded version is released (its state goes from UNLOADING to END) when its last
request is done. A version that fails to load is refused: the versions already serving keep
serving, GetModelStatus reports the failure with its reason, and the version is tried again only
if its files change.

Names from requests are only compared with the configured names; they never reach the
filesystem.
"""

import gc
import os
import re
import threading
import weakref

from absl import logging
import grpc
from tensorflow_serving.apis import get_model_status_pb2

from serving import status
from serving.servable import DEFAULT_SIGNATURE, Servable

_VERSION_FOLDER = re.compile(r"[0-9]{1,18}")
State = get_model_status_pb2.ModelVersionStatus.State


class _VersionStatus:
  """A version's state and, for a refused version, its error (as GetModelStatus reports them)."""

  def __init__(self, state, error=None):
    self.state = state
    # The code and text only: an exception's traceback would keep its frames, and through
    # them the versions they saw, alive.
    self.error_code = error.code if error is not None else grpc.StatusCode.OK
    self.error_message = error.message if error is not None else ""

  def to_proto(self, version):
    proto = get_model_status_pb2.ModelVersionStatus(version=version, state=self.state)
    proto.status.SetInParent()  # TF Serving always sends the status, OK included
    proto.status.error_code = self.error_code.value[0]
    proto.status.error_message = self.error_message
    return proto


def _fingerprint(path):
  """What changes when a version's files change: each file's relative path, size and mtime."""
  entries = []
  for folder, _, files in os.walk(path):
    for name in files:
      file_path = os.path.join(folder, name)
      try:
        info = os.stat(file_path)
      except OSError:
        continue
      entries.append((os.path.relpath(file_path, path), info.st_size, info.st_mtime_ns))
  return tuple(sorted(entries))


def _load_error(error):
  """A load failure as a ServingError: TensorFlow's code kept, a missing file NOT_FOUND, other
  exceptions INTERNAL (with their type)."""
  if isinstance(error, status.ServingError):
    return error
  if isinstance(error, FileNotFoundError):
    return status.not_found(str(error))
  wrapped = status.ServingError.from_exception(error)
  if wrapped.code == grpc.StatusCode.INTERNAL and not hasattr(error, "error_code"):
    wrapped = status.ServingError(grpc.StatusCode.INTERNAL,
                                  "%s: %s" % (type(error).__name__, wrapped.message))
  return wrapped


class ModelVersions:
  """The versions of one model: which are serving, their states, and the polling that updates them.

  `resolve` and `status` may be called from any thread; `poll` from one thread at a time.
  """

  def __init__(self, config, limits, required_signatures=(DEFAULT_SIGNATURE,), warmup=True,
               batching=None):
    self.config = config
    self._limits = limits
    self._batching = batching
    self._required_signatures = tuple(required_signatures)
    self._warmup = warmup
    self._lock = threading.Lock()
    self._serving = {}  # version -> Servable; replaced as a whole, never changed in place
    self._states = {}  # version -> _VersionStatus
    self._refused = {}  # version -> fingerprint of its files when it was refused
    self._missing_base_path_logged = False

  @property
  def name(self):
    return self.config.name

  def serving_versions(self):
    """The versions now answering requests, newest first."""
    return sorted(self._serving, reverse=True)

  def resolve(self, model_spec):
    """The Servable answering `model_spec` (version, version_label, or the newest)."""
    serving = self._serving  # one consistent snapshot
    choice = model_spec.WhichOneof("version_choice")
    if choice == "version":
      version = model_spec.version.value
      servable = serving.get(version)
      if servable is None:
        raise status.not_found("Servable not found for request: Specific(%s, %d)" % (
            self.name, version))
      return servable
    if choice == "version_label":
      version = self._label_version(model_spec.version_label)
      servable = serving.get(version)
      if servable is None:
        raise status.not_found("Servable not found for request: Specific(%s, %d) (label %s)" % (
            self.name, version, model_spec.version_label))
      return servable
    if not serving:
      raise status.not_found("Servable not found for request: Latest(%s)" % self.name)
    return serving[max(serving)]

  def _label_version(self, label):
    if label not in self.config.version_labels:
      raise status.invalid_argument("Unrecognized servable version label: %s" %
                                    status.quote(label))
    return self.config.version_labels[label]

  def status(self, model_spec):
    """ModelVersionStatus protos for `model_spec` (one version, a label's, or all, newest first)."""
    choice = model_spec.WhichOneof("version_choice")
    with self._lock:
      states = dict(self._states)
    if choice is None:
      if not states:
        raise status.not_found("Could not find any versions of model %s" % self.name)
      return [states[version].to_proto(version) for version in sorted(states, reverse=True)]
    if choice == "version_label":
      version = self._label_version(model_spec.version_label)
    else:
      version = model_spec.version.value
    if version not in states:
      raise status.not_found("Could not find version %d of model %s" % (version, self.name))
    return [states[version].to_proto(version)]

  def _discover(self):
    """{version: folder} of the version folders under the base path (none if it is missing)."""
    base_path = self.config.base_path
    try:
      names = os.listdir(base_path)
    except OSError as error:
      if not self._missing_base_path_logged:
        logging.warning("Model %s: cannot list base path %s: %s", self.name, base_path, error)
        self._missing_base_path_logged = True
      return {}
    self._missing_base_path_logged = False
    found = {}
    for name in names:
      path = os.path.join(base_path, name)
      if _VERSION_FOLDER.fullmatch(name) and os.path.isdir(path):
        found.setdefault(int(name), path)
    return found

  def _still_refused(self, version, path):
    if version not in self._refused:
      return False
    if _fingerprint(path) == self._refused[version]:
      return True
    logging.info("Model %s version %d changed on disk since it was refused; loading it again",
                 self.name, version)
    del self._refused[version]
    return False

  def _set_state(self, version, state, error=None):
    with self._lock:
      self._states[version] = _VersionStatus(state, error)

  def _load(self, version, path, served):
    """Loads version `version`; returns the Servable, or None when it is refused."""
    logging.info("Loading servable: {name: %s version: %d} from %s", self.name, version, path)
    self._set_state(version, State.LOADING)
    fingerprint = _fingerprint(path)
    try:
      servable = Servable.load(self.name, version, path, self._limits,
                               required_signatures=self._required_signatures, served=served,
                               run_warmup=self._warmup, batching=self._batching)
    except Exception as error:  # pylint: disable=broad-except  (any failure refuses the version)
      error = _load_error(error)
      logging.error("Refused servable {name: %s version: %d}: %s: %s", self.name, version,
                    error.code.name, error.message)
      self._refused[version] = fingerprint
      self._set_state(version, State.END, error)
      return None
    logging.info("Successfully loaded servable version {name: %s version: %d}", self.name,
                 version)
    return servable

  def poll(self):
    """Loads the versions the policy wants, then switches to them. Returns True on a change."""
    on_disk = self._discover()
    serving = self._serving
    loaded = {}
    while True:
      usable = [version for version, path in on_disk.items()
                if version in serving or version in loaded
                or not self._still_refused(version, path)]
      aspired = self.config.aspired(usable)
      pending = sorted((v for v in aspired if v not in serving and v not in loaded), reverse=True)
      if not pending:
        break
      version = pending[0]
      current = serving or loaded
      served = current[max(current)] if current else None
      servable = self._load(version, on_disk[version], served)
      if servable is not None:
        loaded[version] = servable
    new_serving = {version: serving.get(version) or loaded[version] for version in aspired}
    if new_serving.keys() == serving.keys():
      return False
    with self._lock:
      self._serving = new_serving
      for version in new_serving:
        self._states[version] = _VersionStatus(State.AVAILABLE)
      for version, servable in serving.items():
        if version not in new_serving:
          self._release_when_done(version, servable)
    logging.info("Model %s now serves version(s) %s", self.name,
                 ", ".join(map(str, sorted(new_serving, reverse=True))) or "none")
    return True

  def _release_when_done(self, version, servable):
    """Marks `version` UNLOADING, and END once the last request holding it has answered."""
    record = _VersionStatus(State.UNLOADING)
    self._states[version] = record
    name = self.name

    def released():
      logging.info("Unloaded servable version {name: %s version: %d}", name, version)
      record.state = State.END

    weakref.finalize(servable, released)


class ModelManager:
  """All served models by name, and the thread polling their base paths."""

  def __init__(self, configs, limits, required_signatures=(DEFAULT_SIGNATURE,), warmup=True,
               batching=None):
    """`batching`: `serving.batching.BatchingOptions` for every version, or None (no batching)."""
    self._models = {config.name: ModelVersions(config, limits, required_signatures, warmup,
                                               batching)
                    for config in configs}
    self._stop = threading.Event()
    self._thread = None

  @property
  def names(self):
    return sorted(self._models)

  def model(self, name):
    """The configured model `name`; NOT_FOUND otherwise (the name is only compared)."""
    model = self._models.get(name)
    if model is None:
      raise status.not_found("Servable not found for request: Latest(%s)" % status.quote(name))
    return model

  def resolve(self, model_spec):
    """The Servable that answers `model_spec` (raises NOT_FOUND / INVALID_ARGUMENT)."""
    return self.model(model_spec.name).resolve(model_spec)

  def get_model_status(self, request):
    """Answers a GetModelStatusRequest."""
    model = self._models.get(request.model_spec.name)
    if model is None:
      raise status.not_found("Could not find any versions of model %s" %
                             status.quote(request.model_spec.name))
    return get_model_status_pb2.GetModelStatusResponse(
        model_version_status=model.status(request.model_spec))

  def poll(self):
    """Polls every model once (loading, switching and unloading versions)."""
    changed = False
    for name in self.names:
      try:
        changed |= self._models[name].poll()
      except Exception:  # pylint: disable=broad-except  (keep polling the other models)
        logging.exception("Polling model %s failed", name)
    if changed:
      # Loaded SavedModels hold reference cycles: collect now, so that an unloaded version is
      # released as soon as its last request is done rather than at some later collection.
      gc.collect()

  def start_polling(self, interval_seconds):
    """Polls in a background thread every `interval_seconds` (0: never) until `stop`."""
    if interval_seconds <= 0:
      return
    def loop():
      while not self._stop.wait(interval_seconds):
        self.poll()
    self._thread = threading.Thread(target=loop, name="version-poller", daemon=True)
    self._thread.start()

  def stop(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
