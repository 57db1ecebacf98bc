"""examples/gru_attenmixer_retrieval.py: AttenMixer inside a from-scratch TFRS model."""

import importlib.util
import os
import sys

import tfrs_attenmixer  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                       "gru_attenmixer_retrieval.py")


def load_example():
  spec = importlib.util.spec_from_file_location("gru_attenmixer_retrieval", EXAMPLE)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # AutoGraph looks functions' modules up there
  spec.loader.exec_module(module)
  return module


def test_gru_attenmixer_trains_saves_and_reloads(tmp_path):
  example = load_example()
  results = example.run(num_items=100, num_sessions=600, dim=16, steps=40, batch_size=64,
                        export_dir=str(tmp_path / "query_tower"))
  print(results)
  assert results["loss_after"] < 0.8 * results["loss_before"], results
  assert results["hr_at_20"] > 0.2, results  # 20 of 100 items at random: 0.2
  assert results["reload_max_abs_difference"] == 0.0, results
  assert os.path.exists(tmp_path / "query_tower" / "query_tower.keras")
