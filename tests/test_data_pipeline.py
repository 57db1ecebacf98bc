"""Sessions -> TFRecord -> tf.data: prefix expansion, round trip, determinism, sharding, stats."""

import collections
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, requires_shared_data, run_module, shared_data_dir
from data import examples, pipeline, registry
from data.pipeline import InputConfig, make_dataset, training_steps_per_epoch
from data.prepare import PrepareConfig, prepare
from data.prepared import PreparedDataset
from data.tfrecord import parse_sessions, write_shards


def reference_examples(sessions, max_length, min_prefix_length):
  """The README's rule, written plainly: ([v1..vk], v(k+1)) for every prefix k."""
  rows = []
  for session in sessions:
    for k in range(min_prefix_length, len(session)):
      window = session[max(0, k - max_length):k]
      rows.append(([0] * (max_length - len(window)) + list(window), int(session[k])))
  return rows


def as_rows(batch):
  items, targets = np.asarray(batch["items"]).tolist(), np.asarray(batch["target"]).tolist()
  return list(zip(items, targets))


@pytest.mark.parametrize("max_length,min_prefix_length", [(20, 1), (3, 1), (4, 2), (1, 1)])
def test_prefix_expansion_equals_the_rule(max_length, min_prefix_length):
  rng = np.random.default_rng(max_length)
  sessions = [list(rng.integers(1, 50, size=rng.integers(1, 30))) for _ in range(60)]
  got = examples.expand_prefixes(sessions, max_length, min_prefix_length)
  assert got["items"].dtype == np.int32 and got["items"].shape[1] == max_length
  assert as_rows(got) == reference_examples(sessions, max_length, min_prefix_length)


def test_tfrecord_round_trip(tmp_path):
  sessions = [[3, 1, 2], [7], [5, 5, 9, 1], [2, 8]]
  entries = write_shards(sessions, str(tmp_path), "train", num_shards=3, min_prefix_length=1)
  assert [e["sessions"] for e in entries] == [2, 1, 1]
  assert sum(e["examples"] for e in entries) == 2 + 0 + 3 + 1
  files = [str(tmp_path / e["file"]) for e in entries]
  read = tf.data.TFRecordDataset(files).batch(10).map(parse_sessions)
  assert next(iter(read)).to_list() == sessions
  assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_prepared_layout_and_stats(synthetic_prepared):
  manifest, stats = synthetic_prepared.manifest, synthetic_prepared.stats()
  assert manifest["num_items"] == synthetic_prepared.vocabulary().size == stats["num_items"]
  assert len(synthetic_prepared.files("train")) == 4
  splits = stats["splits"]
  assert splits["train"]["sessions"] + splits["valid"]["sessions"] == splits["published_train"]["sessions"]
  assert splits["valid"]["sessions"] == round(0.1 * splits["published_train"]["sessions"])
  for split in ("train", "valid", "test"):
    assert synthetic_prepared.num_examples(split) == splits[split]["examples"]


def test_validation_is_the_most_recent_training_sessions(tmp_path):
  data_dir = tmp_path / "data"
  (data_dir / "tiny").mkdir(parents=True)
  train = [[i, i + 1] for i in range(1, 41)]
  spec = registry.DatasetSpec("tiny", "test fixture")
  registry.DATASETS["tiny"] = spec
  try:
    with gzip.open(data_dir / "tiny" / registry.TRAIN_FILE, "wt") as f:
      f.write("".join(" ".join(map(str, s)) + "\n" for s in train))
    with gzip.open(data_dir / "tiny" / registry.TEST_FILE, "wt") as f:
      f.write("1 2 3\n")
    prepared = prepare(PrepareConfig("tiny", num_shards=1), str(tmp_path / "out"), str(data_dir))
    vocab = prepared.vocabulary()
    assert vocab.raw_ids == tuple(str(i) for i in range(1, 42))  # 1..N maps to itself
    valid = tf.data.TFRecordDataset(prepared.files("valid")).batch(100).map(parse_sessions)
    assert next(iter(valid)).to_list() == train[-4:]
  finally:
    del registry.DATASETS["tiny"]


def test_training_order_is_a_function_of_seed_and_epoch(synthetic_prepared):
  config = InputConfig(batch_size=32, shuffle_buffer=1000, train_order="shuffled")

  def first_batches(seed, epoch):
    dataset = make_dataset(synthetic_prepared, "train", config, training=True, seed=seed,
                           epoch=epoch)
    return [b["target"].numpy().tolist() for b in dataset.take(3)]

  assert first_batches(1, 0) == first_batches(1, 0)
  assert first_batches(1, 0) != first_batches(1, 1)
  assert first_batches(1, 0) != first_batches(2, 0)
  # Resuming mid-epoch: skip(n) continues with exactly the batches that would have come next.
  full = make_dataset(synthetic_prepared, "train", config, training=True, seed=1, epoch=0)
  resumed = make_dataset(synthetic_prepared, "train", config, training=True, seed=1, epoch=0)
  expected = [b["target"].numpy().tolist() for b in full.skip(5).take(2)]
  assert [b["target"].numpy().tolist() for b in resumed.skip(5).take(2)] == expected


def test_a_shuffled_epoch_is_a_permutation_of_all_examples(synthetic_prepared):
  config = InputConfig(batch_size=64, max_length=20, train_order="shuffled")
  sessions = []
  for batch in tf.data.TFRecordDataset(synthetic_prepared.files("train")).batch(1000).map(
      parse_sessions):
    sessions += batch.to_list()
  expected = collections.Counter(
      (tuple(items), target) for items, target in reference_examples(sessions, 20, 1))
  got = collections.Counter()
  for batch in make_dataset(synthetic_prepared, "train", config, training=True, seed=3):
    got.update((tuple(items), target) for items, target in as_rows(batch))
  assert sum(got.values()) == training_steps_per_epoch(synthetic_prepared, config) * 64
  assert sum(expected.values()) - sum(got.values()) < 64  # only the last partial batch is dropped
  assert not got - expected


def test_evaluation_covers_every_example_once_in_order(synthetic_prepared):
  config = InputConfig(batch_size=50)
  sessions = next(iter(tf.data.TFRecordDataset(synthetic_prepared.files("test")).batch(10**6).map(
      parse_sessions))).to_list()
  rows = []
  for batch in make_dataset(synthetic_prepared, "test", config, training=False):
    rows += as_rows(batch)
  assert rows == [(items, target) for items, target in reference_examples(sessions, 20, 1)]


@pytest.mark.parametrize("multiple", [1, 2, 4, 7])
def test_trimmed_batches_keep_every_item_and_their_width_is_the_longest_session(
    synthetic_prepared, multiple):
  """`length_multiple`: each batch is cut to its longest session rounded up (at most
  max_length), and padding the cut batches back gives exactly the untrimmed batches."""
  config = InputConfig(batch_size=16)
  full = list(make_dataset(synthetic_prepared, "test", config, training=False))
  trimmed = list(make_dataset(synthetic_prepared, "test",
                              InputConfig(batch_size=16, length_multiple=multiple),
                              training=False))
  assert len(full) == len(trimmed)
  widths = set()
  for whole, cut in zip(full, trimmed):
    items = np.asarray(whole["items"])
    longest = int(np.max(np.sum(items != 0, axis=1)))
    width = min(-(-longest // multiple) * multiple, 20)
    assert cut["items"].shape == (items.shape[0], width)
    np.testing.assert_array_equal(np.pad(cut["items"], [(0, 0), (20 - width, 0)]), items)
    np.testing.assert_array_equal(cut["target"], whole["target"])
    widths.add(width)
  assert len(widths) > 1 and all(w % multiple == 0 or w == 20 for w in widths)
  assert widths <= set(pipeline.trimmed_widths(20, multiple))
  assert pipeline.trimmed_widths(20, 7) == [7, 14, 20]


def test_trim_padding_of_a_batch_without_items_keeps_one_column():
  batch = {"items": tf.zeros([3, 5], tf.int32), "target": tf.ones([3], tf.int32)}
  assert pipeline.trim_padding(batch, 2)["items"].shape == (3, 1)
  with pytest.raises(ValueError, match="length_multiple"):
    InputConfig(length_multiple=-1)


def test_chronological_training_reads_every_example_in_time_order(synthetic_prepared):
  config = InputConfig(batch_size=64)  # chronological by default
  sessions = next(iter(tf.data.TFRecordDataset(synthetic_prepared.files("train")).batch(10**6).map(
      parse_sessions))).to_list()
  expected = reference_examples(sessions, 20, 1)
  steps = training_steps_per_epoch(synthetic_prepared, config)

  def rows(**kwargs):
    dataset = make_dataset(synthetic_prepared, "train", config, training=True, **kwargs)
    return [row for batch in dataset for row in as_rows(batch)]

  # The same order whatever the seed or epoch: the sessions' order, each session's prefixes in turn.
  assert rows(seed=1, epoch=0) == rows(seed=2, epoch=5) == expected[:steps * 64]
  # Two pipelines ("auto" shards chronological data by example): each step's global batch is the
  # single-process batch, so the time order holds across workers too.
  shards = [make_dataset(synthetic_prepared, "train", config, training=True,
                         input_context=tf.distribute.InputContext(2, pipeline_id, 2))
            for pipeline_id in range(2)]
  for step, (first, second) in enumerate(zip(*[s.take(3) for s in shards])):
    assert sorted(as_rows(first) + as_rows(second)) == sorted(expected[step * 64:(step + 1) * 64])


def test_unknown_training_order_is_refused():
  with pytest.raises(ValueError, match="train_order must be one of"):
    InputConfig(train_order="random")


@pytest.mark.parametrize("policy", ["data", "file"])
def test_sharded_pipelines_split_the_data(synthetic_prepared, policy):
  config = InputConfig(batch_size=40, shard_policy=policy, train_order="shuffled")
  single = make_dataset(synthetic_prepared, "train", config, training=True, seed=4)
  shards = []
  for pipeline_id in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
    shards.append(make_dataset(synthetic_prepared, "train", config, training=True, seed=4,
                               input_context=context))
  steps = training_steps_per_epoch(synthetic_prepared, config, num_pipelines=2)
  per_worker = [[as_rows(b) for b in shard.take(steps)] for shard in shards]
  assert all(len(batches) == steps for batches in per_worker)
  assert all(len(b) == 20 for batches in per_worker for b in batches)
  if policy == "data":
    # The union of the workers' batches at each step is exactly the single-process global batch.
    for step, batch in enumerate(single.take(steps)):
      union = sorted(per_worker[0][step] + per_worker[1][step])
      assert union == sorted(as_rows(batch))
  else:
    files = synthetic_prepared.files("train")
    assert len(files) == 4  # each worker reads two whole files


def test_import_selects_keras_2_in_a_fresh_process():
  probe = ("import tfrs_attenmixer, tensorflow as tf, tensorflow_recommenders as tfrs; "
           "print(tf.keras.layers.Dense.__module__.split('.')[0])")
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == "tf_keras"


@requires_shared_data
def test_gowalla_statistics_equal_the_papers_table_1(tmp_path):
  result = run_module("data.prepare", "--dataset=gowalla", f"--data_dir={shared_data_dir()}",
                      f"--output_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "clicks 1,122,788  examples 830,893  items 29,510  average length 3.85" in result.stdout
  with open(tmp_path / "gowalla" / "stats.json") as f:
    table1 = json.load(f)["table1"]
  assert table1 == {"clicks": 1122788, "examples": 830893, "items": 29510, "average_length": 3.85}
  prepared = PreparedDataset.load(str(tmp_path / "gowalla"))
  assert prepared.num_items == 29510
  assert prepared.num_examples("test") == 155332
