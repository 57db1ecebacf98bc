"""`ModelConfig`: every option of the session model and its default, in one place.

The defaults follow the Atten-Mixer paper (see `SPEC.md`); options whose paper and code behaviour
differ name both in their help. Where the paper is silent (the initialisation) the default is the
code's. `attention_temperature` and `normalize_readout` keep the code's behaviour by default until
validation decides (results/README.md). The layers take their constructor defaults from these
classes, and `SessionRetrievalModel` is built from one `ModelConfig`, so a default is changed here
and nowhere else. Each field's meaning is its `help` (`option`), which is also the trainer's flag
help.

The paper's comparisons are named variants (`ModelConfig.variant(name)`), each a few overrides of
the defaults: Table 3 (SR-GNN and SGNN-HN with and without Atten-Mixer) and Table 4 (ablations).
"""

import dataclasses
from typing import Any, Dict, Mapping, Type

ENCODERS = ("embedding", "srgnn", "sgnnhn")
READOUTS = ("attenmixer", "last_item", "mean", "srgnn_attention")
LEVEL_AGGREGATIONS = ("sum", "concat")
LEVEL_SELECTIONS = ("recent", "earliest")
HEAD_SPLITS = ("transpose", "reshape")
ATTENTION_SCORINGS = ("softmax", "sigmoid_softmax")
POOLINGS = ("lp", "mean", "max")
POOLED_NORMALIZATIONS = ("sum", "softmax")
ATTENTION_TEMPERATURES = ("head_dim", "model_dim")
INITIALIZATIONS = ("keras", "uniform")
LOSSES = ("full_softmax", "sampled_softmax")


def option(default: Any, help_text: str) -> Any:
  """A dataclass field with its meaning (`metadata["help"]`, also the trainer's flag help)."""
  return dataclasses.field(default=default, metadata={"help": help_text})


def option_help(cls: Type) -> Dict[str, str]:
  """Maps the fields of a dataclass built with `option` to their help text."""
  return {field.name: field.metadata["help"] for field in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class AttenMixerOptions:
  """The options of the `AttenMixer` readout (SPEC.md, steps 2-5): one field per argument of the
  layer's constructor, whose `dropout` is `attention_dropout` here (`layer_arguments`). Each
  field's `help` gives its meaning; the paper's behaviour is the default.

  Raises:
    ValueError: an option outside its choices or range, naming it.
  """

  num_levels: int = option(3, "L, the number of intent levels (paper 3, authors' code 7; L = 1 "
                           "is the -M ablation).")
  level_aggregation: str = option(
      "sum", "how the items of a level form its query: \"sum\" (deep sets, the paper) or "
      "\"concat\" (ordered concatenation with one linear map per level, the authors' code and "
      "the -LI ablation).")
  level_selection: str = option(
      "recent", "which items level l summarises: \"recent\" (the last l items, inherent "
      "priority) or \"earliest\" (the first l items; the -IP ablation). Slots beyond the "
      "session are zero vectors.")
  num_heads: int = option(8, "attention heads; must divide the item state size.")
  head_split: str = option(
      "transpose", "\"transpose\" (proper multi-head attention: each head owns a slice of "
      "features at every position) or \"reshape\" (the authors' code: a plain reshape of "
      "queries and keys that mixes positions and features across heads).")
  attention_scoring: str = option(
      "softmax", "\"softmax\" (scaled dot product, softmax over positions, the paper) or "
      "\"sigmoid_softmax\" (the code: softmax over positions of 2 * sigmoid(q.k), unscaled).")
  attention_temperature: str = option(
      "head_dim", "the scale of the \"softmax\" scoring's dot products: \"head_dim\" divides "
      "them by sqrt(d / heads) (the authors' code and standard multi-head attention) or "
      "\"model_dim\" by sqrt(d) (the paper's Eq. 7).")
  mask_level_attention: bool = option(
      True, "mask padding out of the per-level attention maps. False reproduces the code's "
      "unmasked first softmax, whose output then depends on the padded length.")
  pooling: str = option("lp", "how the L maps of a head are pooled per position: \"lp\" (Lp "
                        "norm), \"mean\" (-LP ablation) or \"max\".")
  lp_norm: float = option(4.0, "p of the Lp pooling (4, as in the code; p = 1 sums, p -> inf "
                          "tends to max).")
  pooled_normalization: str = option(
      "sum", "renormalisation of the pooled map over valid positions: \"sum\" (divide by the "
      "sum, the paper) or \"softmax\" (the code: masked softmax of 2 * a).")
  normalize_queries_over_levels: bool = option(
      False, "L2-normalise the stacked queries [batch, L, d] along the level axis before the "
      "attention (the code's quirk; changes the attention temperature).")
  attention_dropout: float = option(0.1, "dropout rate on the pooled attention map during "
                                    "training.")
  layer_norm: bool = option(True, "LayerNorm (epsilon 1e-8) on the concatenated heads, as in "
                            "the code.")
  normalize_readout: bool = option(
      False, "L2-normalise the readout s (after the LayerNorm) before the final projection, "
      "as the paper's Eq. 4 writes ~s; the authors' code does not.")

  def __post_init__(self):
    for name, allowed in (("level_aggregation", LEVEL_AGGREGATIONS),
                          ("level_selection", LEVEL_SELECTIONS), ("head_split", HEAD_SPLITS),
                          ("attention_scoring", ATTENTION_SCORINGS),
                          ("attention_temperature", ATTENTION_TEMPERATURES),
                          ("pooling", POOLINGS),
                          ("pooled_normalization", POOLED_NORMALIZATIONS)):
      check_choice(name, getattr(self, name), allowed)
    for name in ("num_levels", "num_heads"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    if self.lp_norm <= 0:
      raise ValueError(f"lp_norm must be > 0, got {self.lp_norm}.")
    if not 0.0 <= self.attention_dropout < 1.0:
      raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}.")

  def layer_arguments(self) -> Dict[str, Any]:
    """The options as `AttenMixer`'s constructor arguments (of a `ModelConfig` too)."""
    return {_LAYER_ARGUMENT.get(field.name, field.name): getattr(self, field.name)
            for field in dataclasses.fields(AttenMixerOptions)}

  @classmethod
  def from_layer_arguments(cls, arguments: Mapping[str, Any]) -> "AttenMixerOptions":
    """The options from `AttenMixer`'s constructor arguments (other keys are ignored)."""
    return cls(**{field.name: arguments[_LAYER_ARGUMENT.get(field.name, field.name)]
                  for field in dataclasses.fields(cls)})


# AttenMixerOptions fields whose `AttenMixer` constructor argument has another name.
_LAYER_ARGUMENT = {"attention_dropout": "dropout"}


@dataclasses.dataclass(frozen=True)
class ModelConfig(AttenMixerOptions):
  """Options of the session retrieval model: item encoder, readout (Atten-Mixer's options are the
  fields of `AttenMixerOptions`), initialisation, scoring and loss. Each field's `help` gives its
  meaning.

  Raises:
    ValueError: an option outside its choices or range, or an impossible combination.
  """

  encoder: str = option(
      "embedding", "\"embedding\" (item table lookup, the paper's default), \"srgnn\" "
      "(SR-GNN's gated graph network over the session graph) or \"sgnnhn\" (SGNN-HN: star "
      "node and highway connection).")
  embedding_dim: int = option(256, "d, the size of item embeddings, item states and session "
                              "vectors.")
  dropout: float = option(0.1, "dropout rate on the item states during training.")
  gnn_steps: int = option(1, "propagation steps of the graph encoders.")
  normalize: bool = option(
      True, "L2-normalise item states, the session vector and the candidate table (NISER). Off "
      "only for the original, unnormalised SR-GNN baseline.")
  normalize_after_dropout: bool = option(
      False, "L2-normalise the item states again after their dropout in training (the "
      "authors' code), so that they are unit vectors in training as in evaluation.")

  readout: str = option("attenmixer", "the session readout: \"attenmixer\", \"last_item\", "
                        "\"mean\" or \"srgnn_attention\".")

  initialization: str = option(
      "uniform", "\"uniform\" (every trainable weight, biases and LayerNorm parameters "
      "included, drawn from U(-1/sqrt(d), 1/sqrt(d)) by "
      "`SessionRetrievalModel.create_weights`, as the authors' and SR-GNN's code do) or "
      "\"keras\" (each layer's own initialisers: Glorot kernels, zero biases, unit LayerNorm "
      "scales).")

  scale: float = option(16.0, "sigma, the fixed scale of the cosine scores (16; the code's GNN "
                        "variants use 12).")
  table_dropout: float = option(0.1, "dropout rate on the normalised item table used for "
                                "scoring in training (the code).")
  loss: str = option(
      "full_softmax", "\"full_softmax\" (cross-entropy over the whole catalogue, the paper) "
      "or \"sampled_softmax\" (`tfrs.tasks.Retrieval` over sampled candidates with logQ "
      "correction).")
  in_batch_negatives: bool = option(True, "sampled softmax: the other targets of the batch are "
                                    "negatives.")
  num_uniform_negatives: int = option(0, "sampled softmax: extra negatives drawn uniformly from "
                                      "the catalogue, shared by the batch.")

  def __post_init__(self):
    super().__post_init__()
    choices = {"encoder": ENCODERS, "readout": READOUTS, "initialization": INITIALIZATIONS,
               "loss": LOSSES}
    for name, allowed in choices.items():
      check_choice(name, getattr(self, name), allowed)
    for name in ("embedding_dim", "gnn_steps"):
      if getattr(self, name) < 1:
        raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}.")
    for name in ("dropout", "table_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"ModelConfig.{name} must be in [0, 1), got {getattr(self, name)}.")
    if self.embedding_dim % self.num_heads:
      raise ValueError(f"ModelConfig.num_heads ({self.num_heads}) must divide "
                       f"embedding_dim ({self.embedding_dim}).")
    if self.scale <= 0:
      raise ValueError(f"ModelConfig.scale must be > 0, got {self.scale}.")
    if self.num_uniform_negatives < 0:
      raise ValueError("ModelConfig.num_uniform_negatives must be >= 0, "
                       f"got {self.num_uniform_negatives}.")
    if (self.loss == "sampled_softmax" and not self.in_batch_negatives and
        not self.num_uniform_negatives):
      raise ValueError("ModelConfig: sampled_softmax needs in_batch_negatives or "
                       "num_uniform_negatives > 0.")

  @property
  def padding_invariant(self) -> bool:
    """Whether the model's outputs do not depend on the amount of left padding of its input
    (so batches may be cut to their longest session): true unless the Atten-Mixer readout runs
    with `mask_level_attention=False`."""
    return self.readout != "attenmixer" or self.mask_level_attention

  def to_dict(self) -> Dict[str, Any]:
    """The options as a plain JSON-serialisable dict."""
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ModelConfig":
    """Builds a config from `to_dict()` output; unknown keys are an error naming them."""
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"Unknown ModelConfig field(s): {', '.join(unknown)}.")
    return cls(**values)

  @classmethod
  def variant(cls, name: str, **overrides: Any) -> "ModelConfig":
    """The named variant of `VARIANTS` (the paper's tables), with further `overrides`."""
    check_choice("variant", name, tuple(VARIANTS))
    return cls.from_dict({**VARIANTS[name], **overrides})


# The paper's models as overrides of the defaults (which are the full Atten-Mixer of the paper).
VARIANTS: Dict[str, Dict[str, Any]] = {
    "attenmixer": {},
    # The authors' code (src/models/CCSGNN.py) as far as it differs from the paper.
    "attenmixer_code": dict(num_levels=7, level_aggregation="concat", head_split="reshape",
                            attention_scoring="sigmoid_softmax", mask_level_attention=False,
                            pooled_normalization="softmax", normalize_queries_over_levels=True),
    # Table 4 ablations: no multi-level intent, no inherent priority, no local invariance, no Lp.
    "attenmixer_m": dict(num_levels=1),
    "attenmixer_ip": dict(level_selection="earliest"),
    "attenmixer_li": dict(level_aggregation="concat"),
    "attenmixer_lp": dict(pooling="mean"),
    # Table 3: SR-GNN (unnormalised, as published) and SGNN-HN, without and with Atten-Mixer. The
    # authors' GNN code scales cosine scores by 12.
    "srgnn": dict(encoder="srgnn", readout="srgnn_attention", normalize=False, scale=1.0,
                  dropout=0.0, table_dropout=0.0),
    "srgnn_am": dict(encoder="srgnn", scale=12.0),
    "sgnnhn": dict(encoder="sgnnhn", readout="srgnn_attention", scale=12.0),
    "sgnnhn_am": dict(encoder="sgnnhn", scale=12.0),
}


def check_choice(name: str, value: Any, allowed) -> None:
  """Raises a ValueError naming `name` unless `value` is one of `allowed`."""
  if value not in allowed:
    raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
