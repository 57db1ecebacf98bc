"""The training loop: distributed steps, per-epoch evaluation, honest model selection, resumption.

Everything the loop needs to continue after a crash lives in one `tf.train.Checkpoint`: the model,
the optimizer (slots, iteration count and so the learning-rate schedule), the dropout generators'
states, the epoch, the step within the epoch and the history of finished epochs. The input order
of an epoch is a pure function of `(seed, epoch)` (`data.pipeline`), so a resumed epoch skips the
batches already trained on and continues with exactly the ones that would have come next.

Model selection uses the validation split only (best MRR@20, early stopping with `patience`); the
test metrics reported are those of the selected epoch. The test set is also evaluated after every
epoch so that the authors' protocol (best test HR@20 and best test MRR@20 over epochs, each from
its own epoch) can be reported beside it, labelled as such. With `train_on_valid` (the refit on all
training sessions for an epoch count chosen by an earlier selection run) nothing is held out: the
run trains `epochs` epochs and its result is the last one.
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf
import tqdm

from data.pipeline import InputConfig, make_dataset, training_steps_per_epoch
from data.prepared import ALL_TRAINING, PreparedDataset
from tfrs_attenmixer import metrics as metrics_lib
from tfrs_attenmixer.model import SessionRetrievalModel
from trainer.config import ExperimentConfig
from trainer.run_dir import BEST_DIR, CHECKPOINT_DIR, write_error_reason
from trainer import hardware
from trainer.cluster import TaskInfo
from trainer.optimizer import FusedAdam

SELECTION_METRIC = "mrr_at_20"


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite; the message names the step."""


class OutputWriteError(RuntimeError):
  """A checkpoint could not be written (disk full, read-only, ...); earlier ones are intact."""


@dataclasses.dataclass
class EpochRecord:
  """What one finished epoch produced (one entry of the run's history)."""
  epoch: int
  train_loss: float
  learning_rate: float
  train_seconds: float
  train_examples: int
  eval_seconds: float
  valid: Optional[Dict[str, float]]
  test: Optional[Dict[str, float]] = None
  # The machine's 1-minute load average when the epoch's training ended: about the trainer's
  # own thread count when it ran alone, more when other work shared the cores (its speed then
  # says less about the code).
  load_average: Optional[float] = None
  # The CPU model the epoch trained on (`hardware.cpu_model`): a resumed run may move between
  # machines, and a speed is only comparable with one measured on the same CPU.
  cpu: Optional[str] = None

  @property
  def examples_per_second(self) -> float:
    return self.train_examples / max(self.train_seconds, 1e-9)


def dropout_generators(model: tf.keras.Model) -> List[tf.random.Generator]:
  """The random generators of the model's dropout layers, created now if they are not yet.

  Keras keeps these states out of checkpoints on purpose (backward compatibility); the trainer
  checkpoints them itself so that a resumed run draws the same dropout masks.
  """
  generators = []
  for layer in model.submodules:
    random_generator = getattr(layer, "_random_generator", None)
    if random_generator is not None:
      random_generator._maybe_init()  # pylint: disable=protected-access
      if random_generator._generator is not None:  # pylint: disable=protected-access
        generators.append(random_generator._generator)  # pylint: disable=protected-access
  return generators


def variables_bytes(variables: List[tf.Variable]) -> int:
  return sum(v.shape.num_elements() * v.dtype.size for v in variables)


def save_checkpoint(manager: tf.train.CheckpointManager, number: int) -> None:
  """`manager.save(number)`; a failed write removes its partial files and raises `OutputWriteError`.

  TensorFlow writes the data and index files first and only then points the `checkpoint` state
  file at them, so the previous checkpoint stays the one restored whatever happens here.
  """
  try:
    manager.save(checkpoint_number=number)
  except (tf.errors.OpError, OSError) as error:
    prefix = os.path.join(manager.directory, f"ckpt-{number}")
    partials = tf.io.gfile.glob(prefix + "_temp*")
    if prefix not in manager.checkpoints:  # an earlier save of the same number stays
      partials += tf.io.gfile.glob(prefix + ".*")
    for partial in partials:
      try:
        if tf.io.gfile.isdir(partial):
          tf.io.gfile.rmtree(partial)
        else:
          tf.io.gfile.remove(partial)
      except (tf.errors.OpError, OSError):
        pass
    kept = (f"the previous checkpoint {manager.latest_checkpoint} is intact and a rerun of the "
            "same command resumes from it" if manager.latest_checkpoint
            else "no earlier checkpoint exists")
    raise OutputWriteError(f"could not write checkpoint {prefix}: {write_error_reason(error)}; "
                           f"{kept}. Free disk space or fix the folder's permissions.") from error


def percentages(metrics: Dict[str, float]) -> Dict[str, float]:
  return {name: round(100.0 * value, 4) for name, value in metrics.items()}


class Trainer:
  """Trains a `SessionRetrievalModel` on a prepared dataset under a `tf.distribute` strategy."""

  def __init__(self, config: ExperimentConfig, prepared: PreparedDataset, run_dir: str,
               strategy: tf.distribute.Strategy, task: TaskInfo):
    self.config = config
    self.train_config = config.train
    self.prepared = prepared
    self.run_dir = run_dir
    self.strategy = strategy
    self.task = task
    self.input_config = InputConfig(batch_size=self.train_config.batch_size,
                                    max_length=self.train_config.max_length,
                                    shuffle_buffer=self.train_config.shuffle_buffer,
                                    shard_policy=self.train_config.shard_policy,
                                    train_order=self.train_config.train_order,
                                    length_multiple=self._length_multiple())
    self.eval_input_config = dataclasses.replace(self.input_config,
                                                 batch_size=self.train_config.eval_batch_size)
    self.train_split = ALL_TRAINING if self.train_config.train_on_valid else "train"
    self.steps_per_epoch = training_steps_per_epoch(prepared, self.input_config,
                                                    num_pipelines=task.num_workers,
                                                    split=self.train_split)
    if self.train_config.max_steps_per_epoch:
      self.steps_per_epoch = min(self.steps_per_epoch, self.train_config.max_steps_per_epoch)
    if self.steps_per_epoch < 1:
      raise ValueError(f"batch_size {self.train_config.batch_size} is larger than the training "
                       "data of one input pipeline")
    self._build()

  def _length_multiple(self) -> int:
    """`length_multiple` of the input, 0 for a model whose output depends on the padding."""
    multiple = self.train_config.length_multiple
    if multiple and not self.config.model.padding_invariant:
      logging.info("length_multiple=%d ignored: this model's output depends on the padding "
                   "(mask_level_attention=False), so every batch keeps max_length items.",
                   multiple)
      return 0
    return multiple

  # ---------------------------------------------------------------------------------------------
  # Construction

  def _build(self) -> None:
    cfg = self.train_config
    tf.keras.utils.set_random_seed(cfg.seed)
    # Dropout draws from tf.random.Generator objects whose states are variables, so they are
    # checkpointed and a resumed run draws the same masks as an uninterrupted one.
    tf.keras.backend.experimental.enable_tf_random_generator()
    self.precision = hardware.resolve_precision(cfg.mixed_precision)
    logging.info("CPU: %s (bfloat16 features: %s), %d cores; precision %s (--mixed_precision=%s)",
                 hardware.cpu_model(), ", ".join(hardware.cpu_bf16_features()) or "none",
                 os.cpu_count(), self.precision, cfg.mixed_precision)
    if self.precision == "bfloat16":
      tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    with self.strategy.scope():
      self.model = SessionRetrievalModel(self.config.model, self.prepared.num_items)
      self.model.create_weights(cfg.max_length, cfg.seed)
      self.schedule = tf.keras.optimizers.schedules.ExponentialDecay(
          cfg.learning_rate, decay_steps=cfg.lr_decay_epochs * self.steps_per_epoch,
          decay_rate=cfg.lr_decay, staircase=True)
      # PyTorch's Adam epsilon, as in the authors' code; L2 is added to the gradients below.
      # Keras' Adam with TensorFlow's fused update kernel (trainer/optimizer.py).
      self.optimizer = FusedAdam(self.schedule, epsilon=1e-8)
      self.optimizer.build(self.model.trainable_variables)
    # Bookkeeping, identical on every worker: plain local variables (collectives cannot broadcast
    # strings), checkpointed with the rest.
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
    self.history_json = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
    self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                          epoch=self.epoch, step_in_epoch=self.step_in_epoch,
                                          history=self.history_json,
                                          dropout_generators=dropout_generators(self.model))
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, self._writable_dir(CHECKPOINT_DIR), max_to_keep=2)
    self.best_checkpoint = tf.train.Checkpoint(model=self.model)
    self.best_manager = tf.train.CheckpointManager(
        self.best_checkpoint, self._writable_dir(BEST_DIR), max_to_keep=1)
    self._train_step = self._make_train_step()
    self._eval_step = self._make_eval_step()

  def _writable_dir(self, name: str) -> str:
    """The chief writes into the run folder; other workers into a private scratch folder.

    Multi-worker saving is collective (every worker must call `save`), but only the chief's
    copy is kept.
    """
    if self.task.is_chief:
      return os.path.join(self.run_dir, name)
    return os.path.join(self.run_dir, "workers", f"{self.task.task_type}-{self.task.task_index}",
                        name)

  def _make_train_step(self) -> Callable:
    model, optimizer, cfg = self.model, self.optimizer, self.train_config
    num_replicas = self.strategy.num_replicas_in_sync
    variables = model.trainable_variables
    # Per replica: gradients of mean loss / replicas, summed over replicas by the optimizer.
    l2 = cfg.l2 / num_replicas

    if model.config.loss == "full_softmax":
      # The scores' products and softmax natively, the rest compiled (catalogue_softmax.py).
      @tf.function
      def gradients(batch):
        return model.full_softmax_gradients(batch, variables, loss_weight=1.0 / num_replicas,
                                            l2=l2, jit_compile=cfg.jit_compile)
    else:
      @tf.function(jit_compile=cfg.jit_compile)
      def gradients(batch):
        with tf.GradientTape() as tape:
          loss = model.compute_loss(batch, training=True)
          scaled = loss / num_replicas
        grads = tape.gradient(scaled, variables)
        grads = [tf.convert_to_tensor(g) + l2 * v if l2 else g for g, v in zip(grads, variables)]
        return loss, grads

    self.gradients = gradients  # one replica's loss and gradients (timed by benchmarks/)

    def replica_step(batch):
      loss, grads = gradients(batch)
      optimizer.apply_gradients(zip(grads, variables))
      return loss

    @tf.function
    def train_step(iterator):
      losses = self.strategy.run(replica_step, args=(next(iterator),))
      return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    return train_step

  def _make_eval_step(self) -> Callable:
    """`eval_step(batch, rows)`: updates the ranking metrics with a batch scored against
    `rows = self.eval_rows()`. The query tower and the ranking (one fused pass over the scores)
    are compiled; the [batch, d] x [d, N] product runs natively, where it is fastest on a CPU."""
    model, jit_compile = self.model, self.train_config.jit_compile
    tower = tf.function(lambda items: model.query_tower(items, training=False),
                        jit_compile=jit_compile)
    ranks = tf.function(metrics_lib.target_ranks, jit_compile=jit_compile)

    def replica_eval_step(batch, rows):
      scores = tf.matmul(tower(batch["items"]), rows, transpose_b=True)
      updates = ranks(scores, batch["target"])
      for metric in model.ranking_metrics:
        metric.update_state(updates)

    @tf.function
    def eval_step(batch, rows):
      self.strategy.run(replica_eval_step, args=(batch, rows))

    return eval_step

  def eval_rows(self) -> tf.Tensor:
    """The candidate rows [N, d] float32 that evaluation scores against (the normalised table;
    the scores' scale does not change ranks)."""
    return self.model.candidate_embeddings()

  def _distributed(self, split: str, training: bool, epoch: int = 0, skip_steps: int = 0):
    input_config = self.input_config if training else self.eval_input_config

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
      dataset = make_dataset(self.prepared, split, input_config, training=training,
                             seed=self.train_config.seed, epoch=epoch, input_context=context)
      replicas_per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
      return dataset.skip(skip_steps * replicas_per_pipeline)

    return self.strategy.distribute_datasets_from_function(dataset_fn)

  # ---------------------------------------------------------------------------------------------
  # State

  @property
  def history(self) -> List[EpochRecord]:
    return [EpochRecord(**record) for record in json.loads(self.history_json.numpy().decode())]

  def _set_history(self, history: List[EpochRecord]) -> None:
    self.history_json.assign(json.dumps([dataclasses.asdict(r) for r in history]))

  def _restore(self) -> None:
    # Every worker restores the chief's latest checkpoint (the run folder is shared).
    latest = tf.train.latest_checkpoint(os.path.join(self.run_dir, CHECKPOINT_DIR))
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("Resumed from %s: epoch %d, step %d of %d", latest, int(self.epoch.numpy()),
                   int(self.step_in_epoch.numpy()), self.steps_per_epoch)

  def _save(self) -> None:
    save_checkpoint(self.manager, int(self.optimizer.iterations.numpy()))

  def weights_bytes(self) -> int:
    """The size of the model's variables (the selected epoch's checkpoint)."""
    return variables_bytes(self.model.variables)

  def checkpoint_bytes(self) -> int:
    """The size of one training checkpoint: every model and optimizer variable."""
    return variables_bytes(self.model.variables + self.optimizer.variables)

  def weights_fingerprint(self) -> str:
    """A checksum of all weights, to compare the replicas of a distributed run."""
    digest = np.zeros([], np.float64)
    for variable in sorted(self.model.variables, key=lambda v: v.name):
      values = np.asarray(variable.numpy(), np.float64).ravel()
      digest = digest + np.sum(values * np.cos(np.arange(values.size)))
    return f"{float(digest):.10e}"

  # ---------------------------------------------------------------------------------------------
  # Loop

  def evaluate(self, split: str) -> Dict[str, float]:
    """Full-catalogue HR/MRR/NDCG at 5, 10, 20 on a split, as fractions."""
    for metric in self.model.ranking_metrics:
      metric.reset_state()
    rows = self.eval_rows()
    for batch in self._distributed(split, training=False):
      self._eval_step(batch, rows)
    return {m.name: float(m.result().numpy()) for m in self.model.ranking_metrics}

  def _train_epoch(self, epoch: int, start_step: int) -> float:
    """Trains the rest of an epoch from `start_step`; returns the mean loss of those steps."""
    cfg = self.train_config
    iterator = iter(self._distributed(self.train_split, training=True, epoch=epoch,
                                      skip_steps=start_step))
    losses = []
    progress = tqdm.tqdm(range(start_step, self.steps_per_epoch), initial=start_step,
                         total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                         unit="step", disable=not self.task.is_chief, mininterval=2.0,
                         dynamic_ncols=True)
    for step in progress:
      loss = float(self._train_step(iterator).numpy())
      if not np.isfinite(loss):
        kept = (f"the last good checkpoint {self.manager.latest_checkpoint} is kept"
                if self.manager.latest_checkpoint else "no checkpoint had been written yet")
        raise NonFiniteLossError(
            f"training loss is {loss} at epoch {epoch + 1}, step {step + 1} (global step "
            f"{int(self.optimizer.iterations.numpy())}); nothing after it was saved and {kept}. "
            "Check --learning_rate and --scale.")
      losses.append(loss)
      if step % 20 == 0:
        progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
      if (step + 1) % cfg.checkpoint_every_steps == 0 and step + 1 < self.steps_per_epoch:
        self.step_in_epoch.assign(step + 1)
        self._save()
    progress.close()
    return float(np.mean(losses)) if losses else float("nan")

  def train(self) -> List[EpochRecord]:
    """Runs (or resumes) training until the last epoch or early stopping; returns the history."""
    cfg = self.train_config
    self._restore()
    writer = (tf.summary.create_file_writer(os.path.join(self.run_dir, "tensorboard"))
              if self.task.is_chief else tf.summary.create_noop_writer())
    while int(self.epoch.numpy()) < cfg.epochs and not self._should_stop():
      epoch, start_step = int(self.epoch.numpy()), int(self.step_in_epoch.numpy())
      learning_rate = float(self.schedule(self.optimizer.iterations).numpy())
      started = time.perf_counter()
      train_loss = (self._train_epoch(epoch, start_step)
                    if start_step < self.steps_per_epoch else float("nan"))
      train_seconds = time.perf_counter() - started
      load_average = os.getloadavg()[0]
      # Training of this epoch is complete: a crash during evaluation does not repeat it.
      self.step_in_epoch.assign(self.steps_per_epoch)
      self._save()

      started = time.perf_counter()
      valid = None if cfg.train_on_valid else self.evaluate("valid")
      test = (self.evaluate("test") if cfg.evaluate_test_every_epoch or cfg.train_on_valid
              else None)
      record = EpochRecord(epoch=epoch + 1, train_loss=train_loss, learning_rate=learning_rate,
                           train_seconds=train_seconds,
                           train_examples=(self.steps_per_epoch - start_step) * cfg.batch_size,
                           eval_seconds=time.perf_counter() - started, valid=valid, test=test,
                           load_average=load_average, cpu=hardware.cpu_model())
      history = self.history + [record]
      if self._best_epoch(history) == record.epoch:
        save_checkpoint(self.best_manager, record.epoch)
      self._set_history(history)
      self.epoch.assign(epoch + 1)
      self.step_in_epoch.assign(0)
      self._save()
      self._log_epoch(record, writer)
    return self.history

  def _best_epoch(self, history: List[EpochRecord]) -> int:
    """The epoch with the best validation MRR@20 (the earliest on ties); the last one when the
    validation split is trained on."""
    if self.train_config.train_on_valid:
      return history[-1].epoch
    return max(history, key=lambda r: (r.valid[SELECTION_METRIC], -r.epoch)).epoch

  def _should_stop(self) -> bool:
    history = self.history
    if not history or self.train_config.train_on_valid:
      return False
    return history[-1].epoch - self._best_epoch(history) >= self.train_config.patience

  def _log_epoch(self, record: EpochRecord, writer) -> None:
    valid = percentages(record.valid) if record.valid else {}
    test = percentages(record.test) if record.test else {}
    scores = "".join(f"  {split} HR@20 {metrics['hr_at_20']:.2f} MRR@20 {metrics['mrr_at_20']:.2f}"
                     for split, metrics in (("valid", valid), ("test", test)) if metrics)
    logging.info("epoch %d: loss %.4f  lr %.2e%s  %.0f ex/s  train %.0fs eval %.0fs",
                 record.epoch, record.train_loss, record.learning_rate, scores,
                 record.examples_per_second, record.train_seconds, record.eval_seconds)
    with writer.as_default(step=record.epoch):
      tf.summary.scalar("train/loss", record.train_loss)
      tf.summary.scalar("train/learning_rate", record.learning_rate)
      tf.summary.scalar("train/examples_per_second", record.examples_per_second)
      for split, metrics in (("valid", valid), ("test", test)):
        for name, value in metrics.items():
          tf.summary.scalar(f"{split}/{name}", value)
    writer.flush()

  def selected_epoch(self) -> int:
    """The epoch the history selects (the same on every worker)."""
    return self._best_epoch(self.history)

  def restore_best(self) -> int:
    """Loads the weights of the selected epoch into the model; returns that epoch."""
    self.best_checkpoint.restore(
        tf.train.latest_checkpoint(os.path.join(self.run_dir, BEST_DIR))).expect_partial()
    return self.selected_epoch()

  def summary(self) -> Dict[str, Any]:
    """The results of the run (`metrics.json`; see trainer/README.md)."""
    history = self.history
    best = self._best_epoch(history)
    selected = next(r for r in history if r.epoch == best)
    selection = (f"the last epoch (trained on {ALL_TRAINING}, nothing held out)"
                 if self.train_config.train_on_valid else
                 f"best validation {SELECTION_METRIC} (patience {self.train_config.patience})")
    result = {
        "selected_epoch": best,
        "epochs_trained": len(history),
        "selection": selection,
        "test": percentages(selected.test) if selected.test else None,
        "valid": percentages(selected.valid) if selected.valid else None,
        "epochs": [dict(dataclasses.asdict(r), examples_per_second=r.examples_per_second,
                        valid=percentages(r.valid) if r.valid else None,
                        test=percentages(r.test) if r.test else None) for r in history],
        "train_seconds": sum(r.train_seconds for r in history),
        "examples_per_second": (sum(r.train_examples for r in history) /
                                max(sum(r.train_seconds for r in history), 1e-9)),
        "load_average_max": max((r.load_average for r in history
                                 if r.load_average is not None), default=None),
        "cpu": "; ".join(dict.fromkeys(r.cpu for r in history if r.cpu)) or None,
    }
    if all(r.test for r in history):
      result["authors_protocol"] = {
          "note": "best TEST value over epochs, each metric from its own epoch (the authors' "
                  "code); not a valid model-selection protocol",
          "hr_at_20": max(percentages(r.test)["hr_at_20"] for r in history),
          "mrr_at_20": max(percentages(r.test)["mrr_at_20"] for r in history),
      }
    return result
