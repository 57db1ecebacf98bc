"""What the CPU offers the trainer: its model, bfloat16 kernels, and the precision `auto` picks
from them."""

import platform
from typing import Dict, List

# CPU flags (/proc/cpuinfo) under which TensorFlow's oneDNN kernels run bfloat16 products natively
# (AVX512_BF16 instructions, or AMX tiles); without them bfloat16 is emulated and not faster.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def _first_processor(cpuinfo: str) -> Dict[str, str]:
  """The fields of the first processor's block of `cpuinfo` (empty where it cannot be read)."""
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
  return fields


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's model name with its family and model numbers, e.g. "AMD EPYC (family 23, model 1)"
  (virtual machines often report only a vendor's line name, which the numbers tell apart). The
  platform's processor string, or "unknown", where `cpuinfo` cannot be read."""
  fields = _first_processor(cpuinfo)
  name = fields.get("model name") or platform.processor() or "unknown"
  if "cpu family" in fields and "model" in fields:
    return f"{name} (family {fields['cpu family']}, model {fields['model']})"
  return name


def cpu_bf16_features(cpuinfo: str = "/proc/cpuinfo") -> List[str]:
  """Which of `BF16_FLAGS` the CPU has (empty when it has none or `cpuinfo` cannot be read)."""
  flags = set(_first_processor(cpuinfo).get("flags", "").split())
  return [flag for flag in BF16_FLAGS if flag in flags]


def resolve_precision(mixed_precision: str, cpuinfo: str = "/proc/cpuinfo") -> str:
  """`mixed_precision` itself, or for "auto": "bfloat16" where the CPU has bfloat16 kernels
  (`cpu_bf16_features`), else "float32"."""
  if mixed_precision != "auto":
    return mixed_precision
  return "bfloat16" if cpu_bf16_features(cpuinfo) else "float32"
