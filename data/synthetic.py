"""A seeded generator of sessions with learnable structure, for smoke runs and tests.

Items are split into clusters (the "intents" of a session). A session picks a cluster by
popularity, then walks a first-order Markov chain: each next click stays in the current cluster
with probability `stay_probability` (moving to one of a few fixed successors of the current
item, which is what a next-item model can learn) and otherwise jumps to a popular item of another
cluster. Item popularity follows a Zipf law, so a popularity baseline is a meaningful, beatable
reference.
"""

from typing import List

import numpy as np

Session = List[int]


def generate_sessions(num_items: int,
                      num_sessions: int,
                      seed: int,
                      num_clusters: int = 20,
                      successors_per_item: int = 3,
                      stay_probability: float = 0.8,
                      mean_length: float = 5.0,
                      max_length: int = 20,
                      zipf_exponent: float = 1.1) -> List[Session]:
  """Returns `num_sessions` sessions of item ids in `1..num_items`, each of length >= 2.

  The same arguments always give the same sessions.
  """
  if num_items < 2 * num_clusters:
    raise ValueError(f"num_items={num_items} must be at least 2 * num_clusters={num_clusters}")
  rng = np.random.default_rng(seed)
  items = rng.permutation(num_items) + 1
  clusters = np.array_split(items, num_clusters)

  popularity = 1.0 / np.arange(1, num_items + 1) ** zipf_exponent
  popularity_of = np.empty(num_items + 1)
  popularity_of[items] = popularity
  cluster_weights = np.array([popularity_of[m].sum() for m in clusters])
  cluster_weights /= cluster_weights.sum()
  within_cluster = [popularity_of[m] / popularity_of[m].sum() for m in clusters]

  # Fixed successors of every item, drawn by popularity from its own cluster.
  successors = np.zeros((num_items + 1, successors_per_item), dtype=np.int64)
  for members, weights in zip(clusters, within_cluster):
    successors[members] = rng.choice(members, size=(len(members), successors_per_item), p=weights)

  sessions = []
  lengths = np.clip(2 + rng.poisson(mean_length - 2, size=num_sessions), 2, max_length)
  for length in lengths:
    cluster = rng.choice(num_clusters, p=cluster_weights)
    item = int(rng.choice(clusters[cluster], p=within_cluster[cluster]))
    session = [item]
    while len(session) < length:
      if rng.random() < stay_probability:
        item = int(rng.choice(successors[item]))
      else:
        cluster = rng.choice(num_clusters, p=cluster_weights)
        item = int(rng.choice(clusters[cluster], p=within_cluster[cluster]))
      if item != session[-1]:
        session.append(item)
    sessions.append(session)
  return sessions
