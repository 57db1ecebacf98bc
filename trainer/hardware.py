"""What the CPU offers the trainer: its model, bfloat16 kernels, and the precision `auto` picks
from them."""

import platform
from typing import List

# CPU flags (/proc/cpuinfo) under which TensorFlow's oneDNN kernels run bfloat16 products natively
# (AVX512_BF16 instructions, or AMX tiles); without them bfloat16 is emulated and not faster.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's model name (`model name` of `cpuinfo`; the platform's processor string, or
  "unknown", where that cannot be read)."""
  try:
    with open(cpuinfo) as lines:
      for line in lines:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


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
