"""The published numbers our runs are compared with (from SPEC.md: the paper's Tables 2-4 and the
SR-GNN-family results on the SR-GNN Diginetica split). Percentages, two decimals as published."""

from typing import Dict, Optional

# (dataset, variant) -> {metric: value}. Metric names follow `tfrs_attenmixer.metrics`.
PUBLISHED: Dict[tuple, Dict[str, float]] = {
    # Table 2 and Table 3 (Gowalla).
    ("gowalla", "attenmixer"): {"hr_at_20": 55.12, "mrr_at_20": 27.01},
    ("gowalla", "srgnn"): {"hr_at_5": 34.27, "hr_at_10": 42.18, "hr_at_20": 50.16,
                           "mrr_at_5": 22.97, "mrr_at_10": 24.03, "mrr_at_20": 24.58},
    ("gowalla", "srgnn_am"): {"hr_at_5": 37.62, "hr_at_10": 46.07, "hr_at_20": 54.46,
                              "mrr_at_5": 24.46, "mrr_at_10": 25.59, "mrr_at_20": 26.17},
    ("gowalla", "sgnnhn"): {"hr_at_5": 33.10, "hr_at_10": 42.98, "hr_at_20": 50.72,
                            "mrr_at_5": 21.45, "mrr_at_10": 23.06, "mrr_at_20": 24.97},
    ("gowalla", "sgnnhn_am"): {"hr_at_5": 36.37, "hr_at_10": 44.92, "hr_at_20": 53.28,
                               "mrr_at_5": 23.27, "mrr_at_10": 24.42, "mrr_at_20": 25.00},
    # Table 4 (Gowalla ablations).
    ("gowalla", "attenmixer_m"): {"hr_at_20": 50.20, "mrr_at_20": 25.06},
    ("gowalla", "attenmixer_ip"): {"hr_at_20": 52.62, "mrr_at_20": 25.03},
    ("gowalla", "attenmixer_li"): {"hr_at_20": 52.27, "mrr_at_20": 24.91},
    ("gowalla", "attenmixer_lp"): {"hr_at_20": 53.29, "mrr_at_20": 25.54},
    # Table 2 (the paper's Diginetica, LESSR preprocessing).
    ("diginetica", "attenmixer"): {"hr_at_20": 55.66, "mrr_at_20": 18.96},
    ("diginetica", "srgnn"): {"hr_at_20": 51.16, "mrr_at_20": 17.67},
}

# Other published references per dataset: label -> {metric: value}.
REFERENCES: Dict[str, Dict[str, Dict[str, float]]] = {
    "gowalla": {"NISER+ (Table 2)": {"hr_at_20": 53.89, "mrr_at_20": 25.73},
                "DSAN, best baseline (Table 2)": {"hr_at_20": 54.09, "mrr_at_20": 26.64}},
    "diginetica_srgnn": {"SR-GNN (its paper)": {"hr_at_20": 50.73, "mrr_at_20": 17.59},
                         "NISER+ (about)": {"hr_at_20": 53.4, "mrr_at_20": 18.7},
                         "GCE-GNN": {"hr_at_20": 54.22, "mrr_at_20": 19.04}},
}


def published(dataset: str, variant: str) -> Optional[Dict[str, float]]:
  return PUBLISHED.get((dataset, variant))


def comparison_table(dataset: str, variant: str, ours: Dict[str, float]) -> str:
  """A Markdown table of our test metrics beside the paper's (and other references)."""
  rows = [("ours (" + variant + ")", ours)]
  paper = published(dataset, variant)
  if paper:
    rows.append(("paper", paper))
  rows += list(REFERENCES.get(dataset, {}).items())
  metrics = [m for m in ("hr_at_5", "hr_at_10", "hr_at_20", "mrr_at_5", "mrr_at_10", "mrr_at_20",
                         "ndcg_at_20") if m in ours]
  lines = ["| " + " | ".join(["model"] + metrics) + " |",
           "|" + "---|" * (len(metrics) + 1)]
  for label, values in rows:
    lines.append("| " + " | ".join([label] + [f"{values[m]:.2f}" if m in values else ""
                                               for m in metrics]) + " |")
  if paper:
    lines.append("| difference | " + " | ".join(
        f"{ours[m] - paper[m]:+.2f}" if m in paper else "" for m in metrics) + " |")
  return "\n".join(lines)
