"""Distribution strategies for the trainer.

- "mirrored": `tf.distribute.MirroredStrategy` over all local devices (one replica on a CPU-only
  machine, unless `num_cpu_devices` splits the CPU into logical devices).
- "multi_worker": `tf.distribute.MultiWorkerMirroredStrategy`; the cluster comes from the
  `TF_CONFIG` environment variable (`trainer.cluster`).
- "one_device": `tf.distribute.OneDeviceStrategy` on the first CPU.
"""

import tensorflow as tf


def split_cpu(num_devices: int) -> None:
  """Splits the CPU into `num_devices` logical devices; must run before TensorFlow's runtime."""
  if num_devices:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])


def create_strategy(name: str) -> tf.distribute.Strategy:
  """The strategy named by the trainer's `strategy` option (see the module doc).

  Call `split_cpu` first if the CPU is to be split into logical devices.
  """
  if name == "multi_worker":
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy("/cpu:0")
  cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
  # With accelerators, MirroredStrategy's default (all GPUs) is right; on a CPU-only machine name
  # the (possibly logical) CPUs, which it would otherwise reduce to one.
  devices = None if tf.config.list_logical_devices("GPU") else cpus
  return tf.distribute.MirroredStrategy(devices=devices)
