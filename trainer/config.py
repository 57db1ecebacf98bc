"""The trainer's configuration: training options, per-dataset presets, and how flags override them.

Precedence, lowest first: the dataclass defaults (the paper's protocol), the dataset's preset, the
`--variant` (a row of the paper's tables, `ModelConfig.VARIANTS`), then every flag given on the
command line. The effective configuration is written next to the results (`config.json`).
"""

import dataclasses
from typing import Any, Dict, Mapping

from data.input_config import SHARD_POLICIES, TRAIN_ORDERS, InputConfig
from tfrs_attenmixer.config import VARIANTS, ModelConfig, check_choice, option

STRATEGIES = ("mirrored", "multi_worker", "one_device")
PRECISIONS = ("float32", "bfloat16", "auto")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Options of the training protocol (SPEC.md: Adam 1e-3, L2 1e-5, x0.1 every 3 epochs, ...).
  Each field's `help` gives its meaning.

  Raises:
    ValueError: an option outside its choices or range, naming it.
  """
  epochs: int = option(10, "maximum number of training epochs.")
  batch_size: int = option(100, "global batch size (split over replicas).")
  learning_rate: float = option(1e-3, "initial Adam learning rate.")
  l2: float = option(1e-5, "L2 weight decay, added to the gradients as `l2 * weight` (PyTorch "
                     "Adam's weight_decay).")
  lr_decay: float = option(0.1, "factor applied to the learning rate every `lr_decay_epochs` "
                           "epochs.")
  lr_decay_epochs: int = option(3, "epochs between two learning-rate decays.")
  patience: int = option(3, "epochs without a better validation MRR@20 before training stops "
                         "early.")
  max_length: int = option(InputConfig.max_length, "most recent items of a session prefix fed "
                           "to the model.")
  length_multiple: int = option(
      2, "cut each batch's left padding down to its longest session, rounded up to a multiple "
      "of this, so that batches of short sessions cost less (0: every batch is max_length "
      "wide). Never for a model whose output depends on the padding "
      "(`ModelConfig.padding_invariant`).")
  seed: int = option(123, "seed of the weights' initialisation and of the data order.")
  max_steps_per_epoch: int = option(0, "cap on the training steps of an epoch (0: a full pass "
                                    "over the data).")
  checkpoint_every_steps: int = option(1000, "steps between two checkpoints inside an epoch (one "
                                       "is also written at the end of every epoch).")
  eval_batch_size: int = option(500, "batch size of validation and test evaluation.")
  shuffle_buffer: int = option(InputConfig.shuffle_buffer, "examples in the training shuffle "
                               "buffer.")
  shard_policy: str = option(InputConfig.shard_policy, "how input is divided between workers: "
                             "auto, file or data.")
  train_order: str = option(
      InputConfig.train_order, "order of the training examples: \"chronological\" (the "
      "sessions' time order, unshuffled, as the authors' code reads its file; better on "
      "validation) or \"shuffled\" (per epoch, seeded).")
  strategy: str = option("mirrored", "\"mirrored\" (all local devices), \"multi_worker\" "
                         "(reads TF_CONFIG) or \"one_device\".")
  num_cpu_devices: int = option(
      0, "split the CPU into this many logical devices (so \"mirrored\" has that many "
      "replicas on a machine without accelerators); 0 leaves the devices alone.")
  mixed_precision: str = option(
      "float32", "\"float32\", \"bfloat16\" (the catalogue's score products and softmax in "
      "bfloat16: Keras' mixed_bfloat16 policy when the model is built; the query tower and "
      "every variable stay float32) or \"auto\" (bfloat16 where the CPU has bfloat16 kernels, "
      "`trainer.hardware`, else float32).")
  jit_compile: bool = option(
      True, "compile the query tower's training and evaluation passes with XLA (the whole "
      "step for the sampled softmax); the full softmax's table passes are always compiled and "
      "its score products always run natively (`tfrs_attenmixer/catalogue_softmax.py`).")
  evaluate_test_every_epoch: bool = option(
      True, "also evaluate the test set after every epoch, for the authors' protocol (best test "
      "number over epochs); it is never used to select the epoch.")
  train_on_valid: bool = option(
      False, "train on the validation split too (all the published training sessions), the "
      "refit of the honest protocol: with nothing held out, every one of `epochs` epochs is "
      "trained, the last is the result, and the test set is evaluated after each epoch in "
      "place of the validation split (never to select anything).")

  def __post_init__(self):
    check_choice("strategy", self.strategy, STRATEGIES)
    check_choice("mixed_precision", self.mixed_precision, PRECISIONS)
    check_choice("shard_policy", self.shard_policy, SHARD_POLICIES)
    check_choice("train_order", self.train_order, TRAIN_ORDERS)
    if self.length_multiple < 0:
      raise ValueError(f"length_multiple must be >= 0, got {self.length_multiple}.")
    for name in ("epochs", "batch_size", "lr_decay_epochs", "patience", "max_length",
                 "checkpoint_every_steps", "eval_batch_size", "shuffle_buffer"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("max_steps_per_epoch", "num_cpu_devices"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if self.learning_rate <= 0 or self.l2 < 0 or not 0 < self.lr_decay <= 1:
      raise ValueError("need learning_rate > 0, l2 >= 0 and 0 < lr_decay <= 1; got "
                       f"{self.learning_rate}, {self.l2}, {self.lr_decay}")


# Per-dataset presets: overrides of the defaults. The paper uses one protocol for every dataset.
PRESETS: Dict[str, Dict[str, Dict[str, Any]]] = {
    "gowalla": {},
    "diginetica": {},
    "diginetica_srgnn": {},
    "lastfm": {},
    "yoochoose1_64": {},
    "yoochoose1_4": {},
    "retailrocket": {},
    # Small and quick: for smoke runs and tests.
    "synthetic": {"model": dict(embedding_dim=64, num_heads=4),
                  "train": dict(epochs=3, batch_size=64, checkpoint_every_steps=100)},
}


# What the trainer did before each of these fields existed. A stored `config.json` without the
# field was written by that code, so it is read with this value, not with the field's current
# default, which may have changed since (CHANGELOG.md).
VALUES_BEFORE_FIELD: Dict[str, Dict[str, Any]] = {
    "model": {"normalize_after_dropout": False, "initialization": "keras",
              "attention_temperature": "head_dim", "normalize_readout": False},
    "train": {"train_order": "shuffled", "train_on_valid": False, "length_multiple": 0},
}

# Fields that change how fast a run goes, not what it computes (beyond the rounding of its float
# sums): a finished run compares as the same configuration across them (a selection stage
# refitted, a run shown in a table), though a run resumes only with the values it started with.
SPEED_ONLY_FIELDS = ("train.length_multiple", "train.checkpoint_every_steps",
                     "train.eval_batch_size")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """The model and training configuration of one run."""
  model: ModelConfig
  train: TrainConfig

  def to_dict(self) -> Dict[str, Any]:
    return {"model": self.model.to_dict(), "train": dataclasses.asdict(self.train)}

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ExperimentConfig":
    """Reads `to_dict()` output as stored in a run's `config.json`, also one written before some
    fields existed (`VALUES_BEFORE_FIELD`)."""
    model, train = ({**VALUES_BEFORE_FIELD[part], **values[part]} for part in ("model", "train"))
    return cls(ModelConfig.from_dict(model), TrainConfig(**train))


def build_config(dataset: str, variant: str = "attenmixer",
                 model_overrides: Mapping[str, Any] = (),
                 train_overrides: Mapping[str, Any] = ()) -> ExperimentConfig:
  """Defaults < dataset preset < variant < explicit overrides (see the module doc)."""
  check_choice("variant", variant, tuple(VARIANTS))
  preset = PRESETS.get(dataset, {})
  model = ModelConfig.from_dict({**preset.get("model", {}), **VARIANTS[variant],
                                 **dict(model_overrides)})
  train = TrainConfig(**{**preset.get("train", {}), **dict(train_overrides)})
  return ExperimentConfig(model, train)
