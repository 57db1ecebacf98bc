"""The cluster a trainer process belongs to, from `TF_CONFIG`, checked before TensorFlow starts.

`TF_CONFIG` is the JSON that `tf.distribute.MultiWorkerMirroredStrategy` reads, e.g.

    {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}

(see `trainer/k8s/` for a worked example). A malformed one fails here with a message that says what
to change, instead of deep inside TensorFlow's runtime.
"""

import dataclasses
import json
import os


class ClusterConfigError(ValueError):
  """`TF_CONFIG` is missing or malformed; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class TaskInfo:
  """Where this process stands in the cluster.

  Attributes:
    task_type: "chief" or "worker".
    task_index: index among the tasks of that type.
    num_workers: number of training processes in the cluster.
    is_chief: this process writes checkpoints, logs and results (the chief task, or worker 0 when
      the cluster has no chief); the others only take part in the steps.
  """
  task_type: str
  task_index: int
  num_workers: int
  is_chief: bool


def read_tf_config(strategy: str) -> TaskInfo:
  """Parses and checks `TF_CONFIG` for `strategy` (a single local task when not multi-worker)."""
  if strategy != "multi_worker":
    return TaskInfo("worker", 0, 1, is_chief=True)
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    raise ClusterConfigError(
        "--strategy=multi_worker needs the TF_CONFIG environment variable, e.g. TF_CONFIG='"
        '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\'')
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as error:
    raise ClusterConfigError(f"TF_CONFIG is not valid JSON ({error.msg} at character "
                             f"{error.pos}): {raw[:200]!r}") from None
  if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
    raise ClusterConfigError('TF_CONFIG needs a "cluster" object mapping task types to '
                             '"host:port" lists')
  task = config.get("task")
  if not isinstance(task, dict) or "type" not in task or "index" not in task:
    raise ClusterConfigError('TF_CONFIG needs a "task" object with "type" and "index"')
  cluster = config["cluster"]
  for task_type, addresses in cluster.items():
    if task_type not in ("chief", "worker", "evaluator"):
      raise ClusterConfigError(f"TF_CONFIG cluster task type {task_type!r} is not supported by "
                               "multi_worker (use chief/worker)")
    if (not isinstance(addresses, list) or
        not all(isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses)):
      raise ClusterConfigError(f"TF_CONFIG cluster[{task_type!r}] must be a list of "
                               f"'host:port' strings, got {addresses!r}")
  task_type, index = task["type"], task["index"]
  if task_type not in cluster or not isinstance(index, int) or not 0 <= index < len(
      cluster[task_type]):
    raise ClusterConfigError(f"TF_CONFIG task {task!r} is not in the cluster {cluster!r}")
  num_workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
  is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and
                                      "chief" not in cluster)
  return TaskInfo(task_type, index, num_workers, is_chief)
