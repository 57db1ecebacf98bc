"""The trainer's evaluation (XLA-compiled, batched, distributed) equals a NumPy ranking."""

import numpy as np
import pytest


@pytest.mark.parametrize("jit_compile", [True, False])
def test_trainer_evaluation_equals_numpy_full_catalogue_ranking(synthetic_prepared, tmp_path,
                                                               jit_compile):
  import tensorflow as tf
  from data.pipeline import InputConfig, make_dataset
  from trainer.cluster import TaskInfo
  from trainer.config import build_config
  from trainer.strategy import create_strategy
  from trainer.training import Trainer
  config = build_config("synthetic", model_overrides={"embedding_dim": 16, "num_heads": 2},
                        train_overrides={"eval_batch_size": 64, "jit_compile": jit_compile})
  trainer = Trainer(config, synthetic_prepared, str(tmp_path), create_strategy("mirrored"),
                    TaskInfo("worker", 0, 1, True))
  model = trainer.model
  # Weights other than the initial ones, so that ranks spread over the catalogue.
  for variable in model.trainable_variables:
    variable.assign(tf.random.stateless_normal(variable.shape, [3, len(variable.name)]))
  got = trainer.evaluate("test")

  candidates = model.candidate_embeddings().numpy().astype(np.float64)
  ranks = []
  for batch in make_dataset(synthetic_prepared, "test", InputConfig(batch_size=97),
                            training=False):
    queries = model.query_tower(batch["items"], training=False).numpy().astype(np.float64)
    scores = queries @ candidates.T
    targets = batch["target"].numpy() - 1
    true_scores = scores[np.arange(len(targets)), targets][:, None]
    ranks.append(1 + (scores > true_scores + 1e-9).sum(axis=1))
  ranks = np.concatenate(ranks)
  assert len(ranks) == synthetic_prepared.stats()["splits"]["test"]["examples"]
  assert 0.01 < got["hr_at_20"] < 0.99 and ranks.max() > 100  # not a degenerate ranking
  for k in (5, 10, 20):
    inside = ranks <= k
    # One example may move across a near-tie between float32 and float64 scores.
    np.testing.assert_allclose(got[f"hr_at_{k}"], inside.mean(), atol=1.5 / len(ranks))
    np.testing.assert_allclose(got[f"mrr_at_{k}"], np.where(inside, 1 / ranks, 0).mean(),
                               atol=1.5 / len(ranks))
    np.testing.assert_allclose(got[f"ndcg_at_{k}"],
                               np.where(inside, 1 / np.log2(ranks + 1), 0).mean(),
                               atol=1.5 / len(ranks))


@pytest.mark.parametrize("variant,expected", [("attenmixer", 2), ("attenmixer_code", 0)])
def test_batches_are_cut_only_for_a_padding_invariant_model(synthetic_prepared, tmp_path,
                                                           variant, expected):
  """The trainer's input cuts padding (`length_multiple`), except for the authors' code
  variant, whose unmasked attention depends on the padded length."""
  from trainer.cluster import TaskInfo
  from trainer.config import build_config
  from trainer.strategy import create_strategy
  from trainer.training import Trainer
  config = build_config("synthetic", variant,
                        model_overrides={"embedding_dim": 16, "num_heads": 2})
  assert config.train.length_multiple == 2
  trainer = Trainer(config, synthetic_prepared, str(tmp_path), create_strategy("mirrored"),
                    TaskInfo("worker", 0, 1, True))
  assert trainer.input_config.length_multiple == expected
  assert trainer.eval_input_config.length_multiple == expected
  widths = {int(b["items"].shape[1]) for b in trainer._distributed("valid", training=False)}  # pylint: disable=protected-access
  if expected:
    assert all(width % expected == 0 and width <= 20 for width in widths)
  else:
    assert widths == {20}
