"""`tf.data` input pipelines over prepared TFRecord sessions.

    files -> parallel interleave of TFRecord readers -> batches of serialized sessions
          -> parse + vectorised prefix expansion (`data.examples`) -> examples
          -> shuffle -> (shard) -> batch -> (trim padding) -> prefetch

Batches are `{"items": int32 [batch, max_length] (left-padded), "target": int32 [batch]}`; with
`InputConfig.length_multiple` the items are [batch, width], `width` the batch's longest session
rounded up (`trim_padding`).

Training order is a pure function of `(seed, epoch)`: the same call gives the same batches, so an
interrupted epoch resumes exactly with `dataset.skip(steps_done)`. With
`train_order="chronological"` there is no shuffle: the files (contiguous blocks of time-ordered
sessions) are read one after the other and each session's prefixes follow each other.

Distribution: pass the `tf.distribute.InputContext` of `distribute_datasets_from_function`. Each
input pipeline then reads a disjoint part of the data: whole files when there are at least as
many files as pipelines (`shard_policy="auto"` or `"file"`), otherwise every n-th example
(`"data"`), which also keeps the global batch identical to a single-process run. "auto" shards
chronological training by example, so that the global batches keep the time order.
"""

from typing import Dict, List, Optional

import tensorflow as tf

from data import examples
from data.input_config import InputConfig
from data.prepared import PreparedDataset
from data.tfrecord import parse_sessions

def make_dataset(prepared: PreparedDataset,
                 split: str,
                 config: InputConfig,
                 training: bool,
                 seed: int = 0,
                 epoch: int = 0,
                 input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
  """Batches of examples of one split.

  Args:
    prepared: the prepared dataset.
    split: "train", "valid", "test" or "train+valid" (both training splits, in time order).
    config: pipeline settings.
    training: drop the last partial batch and order examples by `config.train_order` (shuffled
      by `seed` and `epoch`, or chronological).
    seed: base seed of the shuffles.
    epoch: epoch number; each epoch has its own deterministic order.
    input_context: set under `tf.distribute`: which of how many pipelines this is.

  Returns:
    A dataset of `{"items": [b, max_length], "target": [b]}` with `b` the per-replica batch size
    (`[b, width]` items with `config.length_multiple`, see `trim_padding`).
  """
  files = prepared.files(split)
  num_pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  batch_size = (input_context.get_per_replica_batch_size(config.batch_size)
                if input_context else config.batch_size)
  shuffle = training and config.train_order == "shuffled"
  shard_by_file = _shard_by_file(config, len(files), num_pipelines, split, training)
  epoch_seed = seed * 1_000_003 + epoch

  dataset = tf.data.Dataset.from_tensor_slices(files)
  if shard_by_file:
    dataset = dataset.shard(num_pipelines, pipeline_id)
  if shuffle:
    dataset = dataset.shuffle(len(files), seed=epoch_seed, reshuffle_each_iteration=False)
  # Unshuffled reading takes the files one after the other, so examples come in time order.
  dataset = dataset.interleave(
      tf.data.TFRecordDataset, cycle_length=config.cycle_length if shuffle else 1,
      block_length=16,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.batch(config.sessions_per_parse).map(
      lambda serialized: examples.expand_ragged(parse_sessions(serialized), config.max_length,
                                                prepared.min_prefix_length),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
  if shuffle:
    dataset = dataset.shuffle(config.shuffle_buffer, seed=epoch_seed + 1,
                              reshuffle_each_iteration=False)
  if num_pipelines > 1 and not shard_by_file:
    # Every pipeline sees the same shuffled stream and keeps every n-th example, so the union of
    # the pipelines' batches at each step is the batch a single process would draw.
    dataset = dataset.shard(num_pipelines, pipeline_id)
  dataset = dataset.batch(batch_size, drop_remainder=training,
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if config.length_multiple:
    dataset = dataset.map(lambda batch: trim_padding(batch, config.length_multiple))
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  options.deterministic = True
  return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def trim_padding(batch: Dict[str, tf.Tensor], multiple: int) -> Dict[str, tf.Tensor]:
  """Cuts a batch's left padding down to its longest session, rounded up to a multiple.

  Args:
    batch: `{"items": int [b, max_length] left-padded, ...}`.
    multiple: the width is the longest session's length rounded up to a multiple of this (at
      least 1 and at most `max_length`), so that few distinct widths are compiled.

  Returns:
    The batch with `items` [b, width]: its `width` most recent positions; other keys unchanged.
  """
  items = batch["items"]
  max_length = tf.shape(items)[1]
  longest = tf.reduce_max(tf.reduce_sum(tf.cast(tf.not_equal(items, 0), tf.int32), axis=1))
  width = trimmed_width(longest, multiple, max_length)
  return {**batch, "items": items[:, max_length - width:]}


def trimmed_width(longest, multiple: int, max_length):
  """The width `trim_padding` cuts a batch to: `longest` (its longest session's length, an int or
  an int tensor) rounded up to a multiple of `multiple`, clipped to [1, max_length]."""
  rounded = (longest + multiple - 1) // multiple * multiple
  if tf.is_tensor(rounded):
    return tf.clip_by_value(rounded, 1, max_length)
  return min(max(rounded, 1), max_length)


def trimmed_widths(max_length: int, multiple: int) -> List[int]:
  """Every width `trim_padding` can give batches of `max_length` positions, ascending."""
  return sorted({trimmed_width(n, multiple, max_length) for n in range(1, max_length + 1)})


def _shard_by_file(config: InputConfig, num_files: int, num_pipelines: int, split: str,
                   training: bool) -> bool:
  if num_pipelines == 1:
    return False
  policy = config.shard_policy
  if policy == "file" and num_files < num_pipelines:
    raise ValueError(f"shard_policy='file' needs at least {num_pipelines} files in split "
                     f"{split!r}, found {num_files}; use 'auto' or 'data'")
  chronological = training and config.train_order == "chronological"
  return policy == "file" or (policy == "auto" and num_files >= num_pipelines and
                              not chronological)


def training_steps_per_epoch(prepared: PreparedDataset, config: InputConfig,
                             num_pipelines: int = 1, split: str = "train") -> int:
  """Full global batches per training epoch (over `split`) that EVERY input pipeline can supply.

  All replicas must take the same number of steps; with file sharding the pipelines hold
  different numbers of examples, so the smallest one decides.
  """
  per_pipeline_batch = config.batch_size // num_pipelines
  if _shard_by_file(config, len(prepared.files(split)), num_pipelines, split, training=True):
    counts = prepared.shard_examples(split)
    per_pipeline = [sum(counts[i::num_pipelines]) for i in range(num_pipelines)]
  else:
    per_pipeline = [prepared.num_examples(split) // num_pipelines]
  return min(per_pipeline) // per_pipeline_batch
