"""`ModelConfig`: every option of the session model and its default, in one place.

The defaults follow the Atten-Mixer paper (see `SPEC.md`); options whose paper and code behaviour
differ take the paper's version by default and name the code's version in their comment; where
the paper is silent (the initialisation) the default is the code's, which is better on validation
under the paper's protocol (README, Results). The layers take their constructor defaults from this
class, and `SessionRetrievalModel` is built from one instance of it, so a default is changed here
and nowhere else.

The paper's comparisons are named variants (`ModelConfig.variant(name)`), each a few overrides of
the defaults: Table 3 (SR-GNN and SGNN-HN with and without Atten-Mixer) and Table 4 (ablations).
"""

import dataclasses
from typing import Any, Dict, Mapping

ENCODERS = ("embedding", "srgnn", "sgnnhn")
READOUTS = ("attenmixer", "last_item", "mean", "srgnn_attention")
LEVEL_AGGREGATIONS = ("sum", "concat")
LEVEL_SELECTIONS = ("recent", "earliest")
HEAD_SPLITS = ("transpose", "reshape")
ATTENTION_SCORINGS = ("softmax", "sigmoid_softmax")
POOLINGS = ("lp", "mean", "max")
POOLED_NORMALIZATIONS = ("sum", "softmax")
INITIALIZATIONS = ("keras", "uniform")
LOSSES = ("full_softmax", "sampled_softmax")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Options of the session retrieval model (item encoder, readout, scoring, loss).

  Item encoder:
    encoder: "embedding" (item table lookup, the paper's default), "srgnn" (SR-GNN's gated graph
      network over the session graph) or "sgnnhn" (SGNN-HN: star node and highway connection).
    embedding_dim: d, the size of item embeddings, item states and session vectors.
    dropout: dropout rate on the item states during training.
    gnn_steps: propagation steps of the graph encoders.
    normalize: L2-normalise item states, the session vector and the candidate table (NISER). Off
      only for the original, unnormalised SR-GNN baseline.
    normalize_after_dropout: L2-normalise the item states again after their dropout in training
      (the authors' code), so that they are unit vectors in training as in evaluation.

  Readout (the session summary `s`, see `readouts.py` and `attenmixer.py`):
    readout: "attenmixer", "last_item", "mean" or "srgnn_attention".
    num_levels: L, the number of intent levels (paper 3, authors' code 7).
    level_aggregation: how the items of a level form its query: "sum" (deep sets, the paper) or
      "concat" (ordered concatenation, the authors' code and the -LI ablation).
    level_selection: which items level l summarises: "recent" (the last l items, inherent
      priority) or "earliest" (the first l items; the -IP ablation).
    num_heads: attention heads; must divide `embedding_dim`.
    head_split: "transpose" (proper multi-head attention) or "reshape" (the authors' code: a plain
      reshape of queries and keys that mixes positions and features across heads).
    attention_scoring: "softmax" (scaled dot product, softmax over positions, the paper) or
      "sigmoid_softmax" (the code: softmax over positions of 2 * sigmoid(q.k)).
    mask_level_attention: mask padding out of the per-level attention maps. False reproduces the
      code's unmasked first softmax, whose output then depends on the padded length.
    pooling: how the L maps of a head are pooled per position: "lp" (Lp norm), "mean" (-LP
      ablation) or "max".
    lp_norm: p of the Lp pooling (4, as in the code).
    pooled_normalization: renormalisation of the pooled map over valid positions: "sum" (divide by
      the sum, the paper) or "softmax" (the code: masked softmax of 2 * a).
    normalize_queries_over_levels: L2-normalise the stacked queries [batch, L, d] along the level
      axis before the attention (the code's quirk; changes the attention temperature).
    attention_dropout: dropout rate on the pooled attention map during training.
    layer_norm: LayerNorm (epsilon 1e-8) on the concatenated heads, as in the code.

  Initialisation:
    initialization: "uniform" (every trainable weight, biases and LayerNorm parameters included,
      drawn from U(-1/sqrt(d), 1/sqrt(d)) by `SessionRetrievalModel.create_weights`, as the
      authors' and SR-GNN's code do) or "keras" (each layer's own initialisers: Glorot kernels,
      zero biases, unit LayerNorm scales; the default until 2026-12-02).

  Scoring and loss:
    scale: sigma, the fixed scale of the cosine scores (16; the code's GNN variants use 12).
    table_dropout: dropout rate on the normalised item table used for scoring in training (code).
    loss: "full_softmax" (cross-entropy over the whole catalogue, the paper) or "sampled_softmax"
      (`tfrs.tasks.Retrieval` over sampled candidates with logQ correction).
    in_batch_negatives: sampled softmax: the other targets of the batch are negatives.
    num_uniform_negatives: sampled softmax: extra negatives drawn uniformly from the catalogue,
      shared by the batch.
  """

  encoder: str = "embedding"
  embedding_dim: int = 256
  dropout: float = 0.1
  gnn_steps: int = 1
  normalize: bool = True
  normalize_after_dropout: bool = False

  readout: str = "attenmixer"
  num_levels: int = 3
  level_aggregation: str = "sum"
  level_selection: str = "recent"
  num_heads: int = 8
  head_split: str = "transpose"
  attention_scoring: str = "softmax"
  mask_level_attention: bool = True
  pooling: str = "lp"
  lp_norm: float = 4.0
  pooled_normalization: str = "sum"
  normalize_queries_over_levels: bool = False
  attention_dropout: float = 0.1
  layer_norm: bool = True

  initialization: str = "uniform"

  scale: float = 16.0
  table_dropout: float = 0.1
  loss: str = "full_softmax"
  in_batch_negatives: bool = True
  num_uniform_negatives: int = 0

  def __post_init__(self):
    choices = {
        "encoder": ENCODERS,
        "readout": READOUTS,
        "level_aggregation": LEVEL_AGGREGATIONS,
        "level_selection": LEVEL_SELECTIONS,
        "head_split": HEAD_SPLITS,
        "attention_scoring": ATTENTION_SCORINGS,
        "pooling": POOLINGS,
        "pooled_normalization": POOLED_NORMALIZATIONS,
        "initialization": INITIALIZATIONS,
        "loss": LOSSES,
    }
    for name, allowed in choices.items():
      check_choice(name, getattr(self, name), allowed)
    for name in ("embedding_dim", "gnn_steps", "num_levels", "num_heads"):
      if getattr(self, name) < 1:
        raise ValueError(f"ModelConfig.{name} must be >= 1, got {getattr(self, name)}.")
    for name in ("dropout", "attention_dropout", "table_dropout"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"ModelConfig.{name} must be in [0, 1), got {getattr(self, name)}.")
    if self.embedding_dim % self.num_heads:
      raise ValueError(f"ModelConfig.num_heads ({self.num_heads}) must divide "
                       f"embedding_dim ({self.embedding_dim}).")
    if self.lp_norm <= 0:
      raise ValueError(f"ModelConfig.lp_norm must be > 0, got {self.lp_norm}.")
    if self.scale <= 0:
      raise ValueError(f"ModelConfig.scale must be > 0, got {self.scale}.")
    if self.num_uniform_negatives < 0:
      raise ValueError("ModelConfig.num_uniform_negatives must be >= 0, "
                       f"got {self.num_uniform_negatives}.")
    if (self.loss == "sampled_softmax" and not self.in_batch_negatives and
        not self.num_uniform_negatives):
      raise ValueError("ModelConfig: sampled_softmax needs in_batch_negatives or "
                       "num_uniform_negatives > 0.")

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
