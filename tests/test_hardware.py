"""`--mixed_precision=auto` picks bfloat16 exactly where the CPU has bfloat16 kernels; runs name
the CPU they trained on."""

import pytest

from trainer import hardware


@pytest.mark.parametrize("flags,features,precision", [
    ("fpu avx512f avx512_bf16 amx_bf16 amx_tile", ["avx512_bf16", "amx_bf16", "amx_tile"],
     "bfloat16"),
    ("fpu avx512f avx512_bf16", ["avx512_bf16"], "bfloat16"),
    ("fpu avx2 fma", [], "float32"),
])
def test_auto_follows_the_cpu_flags(tmp_path, flags, features, precision):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(f"processor\t: 0\ncpu family\t: 23\nmodel\t\t: 1\nmodel name\t: Some CPU\n"
                     f"flags\t\t: {flags}\n\nprocessor\t: 1\nmodel name\t: Other CPU\n")
  assert hardware.cpu_bf16_features(str(cpuinfo)) == features
  assert hardware.cpu_model(str(cpuinfo)) == "Some CPU (family 23, model 1)"
  assert hardware.resolve_precision("auto", str(cpuinfo)) == precision
  for explicit in ("float32", "bfloat16"):
    assert hardware.resolve_precision(explicit, str(cpuinfo)) == explicit


def test_unreadable_cpuinfo_means_float32(tmp_path):
  assert hardware.cpu_bf16_features(str(tmp_path / "missing")) == []
  assert hardware.resolve_precision("auto", str(tmp_path / "missing")) == "float32"
  assert hardware.cpu_model(str(tmp_path / "missing"))  # the platform's name, or "unknown"


def test_the_trainer_accepts_auto():
  from trainer.config import TrainConfig  # pylint: disable=g-import-not-at-top
  assert TrainConfig(mixed_precision="auto").mixed_precision == "auto"
  with pytest.raises(ValueError, match="mixed_precision"):
    TrainConfig(mixed_precision="float16")


def test_a_trainer_with_auto_scores_in_the_resolved_precision(synthetic_prepared, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainer.cluster import TaskInfo  # pylint: disable=g-import-not-at-top
  from trainer.config import build_config  # pylint: disable=g-import-not-at-top
  from trainer.strategy import create_strategy  # pylint: disable=g-import-not-at-top
  from trainer.training import Trainer  # pylint: disable=g-import-not-at-top
  config = build_config("synthetic", train_overrides=dict(mixed_precision="auto"))
  try:
    trainer = Trainer(config, synthetic_prepared, str(tmp_path), create_strategy("mirrored"),
                      TaskInfo("worker", 0, 1, True))
    expected = hardware.resolve_precision("auto")
    assert trainer.precision == expected
    assert trainer.model.score_dtype == (tf.bfloat16 if expected == "bfloat16" else tf.float32)
    batches = iter(trainer._distributed("train", training=True))  # pylint: disable=protected-access
    assert float(trainer._train_step(batches)) > 0  # pylint: disable=protected-access
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")
