"""What the server serves: each model's name, base path, version policy and version labels.

The models come either from flags (one model: `--model_name`, `--model_base_path`,
`--num_versions`, `--version_labels=stable=1,canary=2`) or from a TF Serving model config file
(`--model_config_file`, a text `ModelServerConfig` such as serving/models.config), so one file
configures both this server and `tensorflow_model_server`.
"""

import dataclasses
import os
import re
from typing import Mapping, Tuple

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

POLICIES = ("latest", "all", "specific")
_LABEL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One served model.

  name: the name requests must give in `model_spec.name` (compared as a string, never used as
    a path).
  base_path: folder holding one subfolder per version (`<base_path>/<integer version>/`).
  policy: which versions found on disk to serve: "latest" (the newest `num_versions`, TF
    Serving's default), "all", or "specific" (those in `versions`).
  version_labels: label -> version, resolving `model_spec.version_label` ("stable", "canary").
  """
  name: str
  base_path: str
  policy: str = "latest"
  num_versions: int = 1
  versions: Tuple[int, ...] = ()
  version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not self.name:
      raise ValueError("a model needs a name")
    if not self.base_path:
      raise ValueError("model %r needs a base path" % self.name)
    if self.policy not in POLICIES:
      raise ValueError("model %r: policy must be one of %s, got %r" % (
          self.name, POLICIES, self.policy))
    if self.policy == "latest" and self.num_versions < 1:
      raise ValueError("model %r: num_versions must be >= 1, got %d" % (
          self.name, self.num_versions))
    if self.policy == "specific" and not self.versions:
      raise ValueError("model %r: the specific policy needs at least one version" % self.name)
    for label, version in self.version_labels.items():
      if not _LABEL.fullmatch(label) or version < 0:
        raise ValueError("model %r: bad version label %r -> %r" % (self.name, label, version))

  def aspired(self, versions):
    """The versions to serve among `versions` (those found on disk that can be loaded)."""
    versions = sorted(set(versions), reverse=True)
    if self.policy == "latest":
      return set(versions[:self.num_versions])
    if self.policy == "specific":
      return set(versions) & set(self.versions)
    return set(versions)


def parse_version_labels(text):
  """'stable=1,canary=2' -> {'stable': 1, 'canary': 2}; raises ValueError naming the bad item."""
  labels = {}
  for item in filter(None, (part.strip() for part in text.split(","))):
    label, sep, version = item.partition("=")
    if not sep or not version.strip().isdigit():
      raise ValueError("--version_labels: expected LABEL=VERSION, got %r" % item)
    labels[label.strip()] = int(version)
  return labels


def from_flags(name, base_path, num_versions=1, version_labels=""):
  """The single model of `--model_name` / `--model_base_path` (made absolute)."""
  return ModelConfig(name=name, base_path=os.path.abspath(base_path), num_versions=num_versions,
                     version_labels=parse_version_labels(version_labels))


def _from_proto(proto, where):
  platform = proto.model_platform or "tensorflow"
  if platform != "tensorflow":
    raise ValueError("%s: model %r: model_platform must be 'tensorflow', got %r" % (
        where, proto.name, platform))
  policy = proto.model_version_policy.WhichOneof("policy_choice") or "latest"
  num_versions = 1
  if policy == "latest":
    num_versions = proto.model_version_policy.latest.num_versions or 1
  versions = tuple(proto.model_version_policy.specific.versions)
  base_path = proto.base_path
  if base_path and not os.path.isabs(base_path):
    base_path = os.path.join(os.path.dirname(os.path.abspath(where)), base_path)
  try:
    return ModelConfig(name=proto.name, base_path=base_path, policy=policy,
                       num_versions=num_versions, versions=versions,
                       version_labels=dict(proto.version_labels))
  except ValueError as error:
    raise ValueError("%s: %s" % (where, error)) from None


def read_model_config_file(path):
  """The models of a text-format `ModelServerConfig` file (its `model_config_list`).

  Relative base paths are taken relative to the file's folder. Raises ValueError naming the file
  (and the line, for syntax errors).
  """
  with open(path, encoding="utf-8") as stream:
    text = stream.read()
  config = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as error:
    raise ValueError("%s: %s" % (path, error)) from None
  if config.WhichOneof("config") != "model_config_list":
    raise ValueError("%s: expected a model_config_list" % path)
  models = [_from_proto(proto, path) for proto in config.model_config_list.config]
  if not models:
    raise ValueError("%s: model_config_list names no model" % path)
  names = [model.name for model in models]
  duplicates = sorted({name for name in names if names.count(name) > 1})
  if duplicates:
    raise ValueError("%s: model names appear twice: %s" % (path, ", ".join(duplicates)))
  return models
