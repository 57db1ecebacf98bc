"""What the CPU offers the trainer: its model, bfloat16 kernels, and the precision `auto` picks
from them."""

import platform
from typing import List

# CPU flags (/proc/cpuinfo) under which TensorFlow's oneDNN kernels run bfloat16 products natively
# (AVX512_BF16 instructions, or AMX tiles); without them bfloat16 is emulated and not faster.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's model name with its family and model numbers, e.g. "AMD EPYC (family 23, model 1)"
  (from the first processor of `cpuinfo`; virtual machines often report only a vendor's line name,
  which the numbers tell apart). The platform's processor string, or "unknown", where `cpuinfo`
  cannot be read."""
  fields = {}
  try:
    with open(cpuinfo) as lines:
      for line in lines:
        if not line.strip():
          break  # the end of the first processor's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  name = fields.get("model name") or platform.processor() or "unknown"
  if "cpu family" in fields and "model" in fields:
    return f"{name} (family {fields['cpu family']}, model {fields['model']})"
  return name


def cpu_bf16_features(cpuinfo: str = "/proc/cpuinfo") -> List[str]:
  """Which of `BF16_FLAGS` the CPU has (empty when it has none or `cpuinfo` cannot be read)."""
  try:
    with open(cpuinfo) as lines:
      for line in lines:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          return [flag for flag in BF16_FLAGS if flag in flags]
  except OSError:
    pass
  return []


def resolve_precision(mixed_precision: str, cpuinfo: str = "/proc/cpuinfo") -> str:
  """`mixed_precision` itself, or for "auto": "bfloat16" where the CPU has bfloat16 kernels
  (`cpu_bf16_features`), else "float32"."""
  if mixed_precision != "auto":
    return mixed_precision
  return "bfloat16" if cpu_bf16_features(cpuinfo) else "float32"
