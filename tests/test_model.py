"""ModelConfig, SessionRetrievalModel (losses, metrics, export, saving), distribution, learning."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfrs_attenmixer as tam
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_ITEMS = 30
SMALL = dict(embedding_dim=12, num_heads=3)


def batch(rng, size=8, length=6):
  """A left-padded batch as the data pipeline makes it, lengths 1..length."""
  items = np.zeros((size, length), np.int32)
  for row in range(size):
    n = rng.integers(1, length + 1)
    items[row, length - n:] = rng.integers(1, NUM_ITEMS + 1, size=n)
  return {"items": items, "target": rng.integers(1, NUM_ITEMS + 1, size=size).astype(np.int32)}


def make_model(variant="attenmixer", item_counts=None, **overrides):
  """A small model with its weights created and initialised, as the trainer makes it."""
  config = tam.ModelConfig.variant(variant, **{**SMALL, **overrides})
  model = tam.SessionRetrievalModel(config, NUM_ITEMS, item_counts=item_counts)
  model.create_weights(max_length=6)
  return model


# ---------------------------------------------------------------------------------------------
# ModelConfig.


def test_config_dict_round_trip_and_errors():
  config = tam.ModelConfig.variant("attenmixer_code", embedding_dim=64)
  assert tam.ModelConfig.from_dict(config.to_dict()) == config
  assert config.num_levels == 7 and config.level_aggregation == "concat"
  with pytest.raises(ValueError, match="num_level"):
    tam.ModelConfig.from_dict({"num_level": 3})
  with pytest.raises(ValueError, match="readout"):
    tam.ModelConfig(readout="gru")
  with pytest.raises(ValueError, match="num_heads"):
    tam.ModelConfig(embedding_dim=10, num_heads=4)
  with pytest.raises(ValueError, match="variant"):
    tam.ModelConfig.variant("attenmixer_xl")
  with pytest.raises(ValueError, match="sampled_softmax"):
    tam.ModelConfig(loss="sampled_softmax", in_batch_negatives=False)


def test_paper_defaults_and_variants():
  config = tam.ModelConfig()
  assert (config.encoder, config.readout, config.embedding_dim, config.num_heads,
          config.num_levels, config.scale, config.loss) == ("embedding", "attenmixer", 256, 8, 3,
                                                            16.0, "full_softmax")
  expected = {"attenmixer_m": ("num_levels", 1), "attenmixer_ip": ("level_selection", "earliest"),
              "attenmixer_li": ("level_aggregation", "concat"),
              "attenmixer_lp": ("pooling", "mean"), "srgnn": ("readout", "srgnn_attention"),
              "srgnn_am": ("encoder", "srgnn"), "sgnnhn": ("encoder", "sgnnhn"),
              "sgnnhn_am": ("readout", "attenmixer")}
  for variant, (field, value) in expected.items():
    assert getattr(tam.ModelConfig.variant(variant), field) == value, variant


# ---------------------------------------------------------------------------------------------
# The model.


@pytest.mark.parametrize("variant", sorted(tam.VARIANTS))
def test_every_variant_trains_and_evaluates(variant):
  rng = np.random.default_rng(0)
  model = make_model(variant)
  data = batch(rng)
  with tf.GradientTape() as tape:
    loss = model.compute_loss(data, training=True)
  grads = tape.gradient(loss, model.trainable_variables)
  assert np.isfinite(loss.numpy())
  for variable, grad in zip(model.trainable_variables, grads):
    assert grad is not None, variable.name
    assert np.abs(tf.convert_to_tensor(grad).numpy()).max() > 0, variable.name
  eval_loss = model.compute_loss(data, training=False)
  assert np.isfinite(eval_loss.numpy())
  results = {m.name: m.result().numpy() for m in model.metrics}
  assert set(results) == {f"{kind}_at_{k}" for kind in ("hr", "mrr", "ndcg") for k in (5, 10, 20)}
  assert 0 <= results["mrr_at_20"] <= results["hr_at_20"] <= 1


@pytest.mark.parametrize("variant", ["attenmixer", "srgnn"])
def test_query_tower_projects_summary_and_last_item(variant):
  """z = W_m [s || h_n], L2-normalised unless the config turns normalisation off (SR-GNN)."""
  model = make_model(variant, dropout=0.0, attention_dropout=0.0)
  items = batch(np.random.default_rng(11))["items"]  # left-padded: h_n is the last column
  tower = model.query_tower
  output = tower(items).numpy()
  states = tower.encoder(items)
  summary = tower.readout(states, mask=items).numpy()
  z = (np.concatenate([summary, states.numpy()[:, -1]], axis=-1) @ tower.projection.kernel.numpy()
       + tower.projection.bias.numpy())
  if model.config.normalize:
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
  np.testing.assert_allclose(output, z, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", sorted(tam.VARIANTS))
def test_cutting_padding_changes_no_output_of_a_padding_invariant_model(variant):
  """What lets the trainer cut batches to their longest session (`length_multiple`): the query
  vectors of a batch and of the same batch without its all-padding columns are the same, for
  every variant that says it is padding invariant; the others do differ (so the check can
  fail)."""
  model = make_model(variant)
  items = batch(np.random.default_rng(5), size=16, length=6)["items"]
  items[:, :2] = 0  # sessions of at most 4 items in 6 columns
  assert model.config.padding_invariant == (variant != "attenmixer_code")
  whole, cut = model.query_tower(items).numpy(), model.query_tower(items[:, 2:]).numpy()
  if model.config.padding_invariant:
    np.testing.assert_allclose(cut, whole, rtol=1e-5, atol=1e-6)
  else:
    assert np.abs(cut - whole).max() > 1e-3


def test_eval_loss_and_ranks_from_exported_towers():
  """compute_loss(training=False) == full softmax over scale * query_model . candidates."""
  rng = np.random.default_rng(1)
  model = make_model()
  data = batch(rng, size=16)
  loss = model.compute_loss(data, training=False).numpy()
  queries = model.query_model()(data["items"]).numpy().astype(np.float64)
  candidates = model.candidate_embeddings().numpy().astype(np.float64)
  table = model.encoder.item_table.numpy()[1:]
  np.testing.assert_allclose(candidates, table / np.linalg.norm(table, axis=1, keepdims=True),
                             rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1, rtol=1e-5)
  np.testing.assert_array_equal(model.candidate_ids(), np.arange(1, NUM_ITEMS + 1))
  logits = 16.0 * queries @ candidates.T
  log_softmax = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1,
                                keepdims=True)) - logits.max(1, keepdims=True)
  expected = -log_softmax[np.arange(16), data["target"] - 1].mean()
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  ranks = 1 + (logits > logits[np.arange(16), data["target"] - 1][:, None]).sum(1)
  hr20 = {m.name: m.result().numpy() for m in model.metrics}["hr_at_20"]
  np.testing.assert_allclose(hr20, (ranks <= 20).mean())


def test_padding_item_is_never_ranked():
  rng = np.random.default_rng(2)
  model = make_model(dropout=0.0)
  data = batch(rng, size=32)
  model.compute_loss(data, training=False)
  before = [m.result().numpy() for m in model.metrics]
  # Make row 0 (padding) the best match of every query: nothing may change.
  queries = model(data)
  table = model.encoder.item_table
  table.assign(tf.tensor_scatter_nd_update(table, [[0]], tf.reduce_mean(queries, 0)[None] * 100))
  for metric in model.metrics:
    metric.reset_state()
  model.compute_loss(data, training=False)
  np.testing.assert_array_equal([m.result().numpy() for m in model.metrics], before)


def test_table_dropout_only_in_training():
  model = make_model(table_dropout=0.5, dropout=0.0, attention_dropout=0.0)
  data = batch(np.random.default_rng(3))
  assert model.compute_loss(data, training=False) == model.compute_loss(data, training=False)
  assert model.compute_loss(data, training=True) != model.compute_loss(data, training=True)


def test_training_before_the_uniform_draw_is_an_error():
  data = batch(np.random.default_rng(5))
  model = tam.SessionRetrievalModel(tam.ModelConfig(**SMALL), NUM_ITEMS)
  model.compute_loss(data, training=False)  # builds the weights with Keras' initialisers
  with pytest.raises(RuntimeError, match=r"create_weights\(max_length, seed\)"):
    model.compute_loss(data, training=True)
  model.create_weights(max_length=6)
  assert np.isfinite(model.compute_loss(data, training=True))
  keras = tam.SessionRetrievalModel(tam.ModelConfig(**SMALL, initialization="keras"), NUM_ITEMS)
  assert np.isfinite(keras.compute_loss(data, training=True))


def test_uniform_initialization_redraws_every_weight_per_seed():
  bound = 1 / np.sqrt(SMALL["embedding_dim"])
  def weights(initialization, seed):
    model = make_model(initialization=initialization)
    model.create_weights(max_length=6, seed=seed)
    return {v.name: v.numpy() for v in model.trainable_variables}
  keras, uniform = weights("keras", 0), weights("uniform", 0)
  assert keras.keys() == uniform.keys()
  for path, value in uniform.items():
    assert np.abs(value).max() <= bound and value.std() > bound / 4, path  # Biases included.
  scales = [path for path in keras if "layer_norm" in path and "gamma" in path]
  assert scales and all((keras[path] == 1).all() for path in scales)
  again, other = weights("uniform", 0), weights("uniform", 1)
  assert all((again[path] == uniform[path]).all() for path in uniform)
  assert all((other[path] != uniform[path]).any() for path in uniform)


@pytest.mark.parametrize("in_batch, uniform", [(True, 0), (False, 7), (True, 7)])
def test_sampled_softmax_matches_numpy(in_batch, uniform):
  rng = np.random.default_rng(4)
  counts = rng.integers(0, 50, size=NUM_ITEMS + 1)
  loss = tam.SampledSoftmaxLoss(NUM_ITEMS, scale=16.0, in_batch_negatives=in_batch,
                                num_uniform_negatives=uniform, item_counts=counts)
  size, dim = 6, 5
  targets = np.array([3, 5, 3, 9, 1, 2], np.int32)  # a repeated target: an accidental hit
  ids = loss.candidate_ids(targets).numpy()
  assert ids.shape == (size + uniform,) and (ids[:size] == targets).all()
  assert ((ids >= 1) & (ids <= NUM_ITEMS)).all()
  ids[size:] = np.resize([3, 17, 22, 2], uniform)  # negatives colliding with targets
  queries = rng.normal(size=(size, dim))
  queries /= np.linalg.norm(queries, axis=1, keepdims=True)
  candidates = rng.normal(size=(size + uniform, dim))
  candidates /= np.linalg.norm(candidates, axis=1, keepdims=True)
  value = loss(tf.constant(queries, tf.float32), tf.constant(candidates, tf.float32),
               tf.constant(ids)).numpy()

  p = counts / counts[1:].sum()
  b_neg = size if in_batch else 0
  q = (b_neg * p[ids] + uniform / NUM_ITEMS) / (b_neg + uniform)
  logits = 16.0 * queries @ candidates.T - np.log(np.clip(q, 1e-6, 1))
  expected = []
  for i in range(size):
    keep = [j for j in range(size + uniform)
            if j == i or (ids[j] != ids[i] and (in_batch or j >= size))]
    expected.append(-(logits[i, i] - np.log(np.exp(logits[i, keep]).sum())))
  np.testing.assert_allclose(value, np.mean(expected), rtol=1e-5)


def test_sampled_softmax_model_trains_every_variable():
  counts = np.arange(NUM_ITEMS + 1)
  model = make_model(loss="sampled_softmax", num_uniform_negatives=10, item_counts=counts)
  data = batch(np.random.default_rng(5))
  with tf.GradientTape() as tape:
    loss = model.compute_loss(data, training=True)
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads) and np.isfinite(loss.numpy())
  model.compute_loss(data, training=False)  # evaluation ranks the full catalogue
  assert {m.name: m.result().numpy() for m in model.metrics}["hr_at_20"] > 0


def test_keras_fit_and_evaluate():
  rng = np.random.default_rng(6)
  model = make_model(dropout=0.0, attention_dropout=0.0, table_dropout=0.0)  # no noise
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
  data = tf.data.Dataset.from_tensor_slices(batch(rng, size=40)).batch(16)
  history = model.fit(data, epochs=3, verbose=0)
  assert history.history["loss"][-1] < history.history["loss"][0]
  results = model.evaluate(data, return_dict=True, verbose=0)
  assert {"loss", "hr_at_20", "mrr_at_20", "ndcg_at_20"} <= set(results)


@pytest.mark.parametrize("training", [True, False])
def test_compute_loss_under_xla(training):
  model = make_model("srgnn_am", dropout=0.0, attention_dropout=0.0, table_dropout=0.0)
  data = batch(np.random.default_rng(7))
  eager = model.compute_loss(data, training=training).numpy()
  compiled = tf.function(lambda d: model.compute_loss(d, training=training), jit_compile=True)
  np.testing.assert_allclose(compiled(data).numpy(), eager, rtol=1e-4)


def test_mixed_bfloat16_model():
  tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = make_model("sgnnhn_am")
    data = batch(np.random.default_rng(8))
    with tf.GradientTape() as tape:
      loss = model.compute_loss(data, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(v.dtype == tf.float32 for v in model.trainable_variables)
    assert np.isfinite(loss.numpy()) and all(g is not None for g in grads)
    assert model(data).dtype == tf.float32
    assert model.candidate_embeddings().dtype == tf.float32
    model.compute_loss(data, training=False)
  finally:
    tf.keras.mixed_precision.set_global_policy("float32")


# ---------------------------------------------------------------------------------------------
# Export and saving.


def test_query_model_saved_model_round_trips(tmp_path):
  model = make_model("srgnn_am")  # the session graph and AttenMixer in one SavedModel
  items = batch(np.random.default_rng(9))["items"]
  query_model = model.query_model()
  expected = query_model(items).numpy()
  np.testing.assert_array_equal(model(items).numpy(), expected)

  tf.keras.models.save_model(query_model, str(tmp_path / "keras"), save_format="tf")
  keras_loaded = tf.keras.models.load_model(str(tmp_path / "keras"))
  assert isinstance(keras_loaded.get_layer("query_tower"), tam.QueryTower)
  np.testing.assert_array_equal(keras_loaded(items).numpy(), expected)

  tf.saved_model.save(query_model, str(tmp_path / "tf"))
  serving = tf.saved_model.load(str(tmp_path / "tf")).signatures["serving_default"]
  (output,) = serving(items=tf.constant(items)).values()
  np.testing.assert_array_equal(output.numpy(), expected)


def test_query_tower_config_and_checkpoint_round_trip(tmp_path):
  model = make_model("sgnnhn_am")
  items = batch(np.random.default_rng(10))["items"]
  expected = model(items).numpy()
  tower = tam.QueryTower.from_config(model.query_tower.get_config())
  assert tower.config == model.config
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
  restored = make_model("sgnnhn_am")
  tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
  np.testing.assert_array_equal(restored(items).numpy(), expected)
  np.testing.assert_array_equal(restored.candidate_embeddings(), model.candidate_embeddings())


# ---------------------------------------------------------------------------------------------
# MirroredStrategy on two logical CPUs (in a fresh process: devices are fixed at TF start-up).

_MIRRORED = textwrap.dedent("""
    import numpy as np
    import tfrs_attenmixer as tam
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    N, D = 30, 12
    items = np.zeros((44, 6), np.int32)
    for row in range(44):
      n = rng.integers(1, 7)
      items[row, 6 - n:] = rng.integers(1, N + 1, size=n)
    targets = rng.integers(1, N + 1, size=44).astype(np.int32)
    states = rng.normal(size=(44, 6, D)).astype(np.float32)

    def per_replica(make, inputs, call):
      # Runs a layer on 2 replicas (16 examples each) and compares with one device.
      inputs = tuple(x[:32] for x in inputs)
      with strategy.scope():
        layer = make()
      single = call(layer, *inputs)  # eager, one device
      dataset = tf.data.Dataset.from_tensor_slices(inputs).batch(32)
      step = tf.function(lambda *x: strategy.run(lambda *y: call(layer, *y), args=x),
                         autograph=False)
      (x,) = strategy.experimental_distribute_dataset(dataset)
      np.testing.assert_allclose(strategy.gather(step(*x), axis=0).numpy(), single.numpy(),
                                 atol=1e-5)

    for cls in (tam.EmbeddingEncoder, tam.SRGNNEncoder, tam.SGNNHNEncoder):
      per_replica(lambda: cls(N, embedding_dim=D), (items,), lambda l, x: l(x))
    for cls in (tam.LastItemReadout, tam.MeanReadout, tam.SRGNNAttentionReadout,
                lambda: tam.AttenMixer(num_heads=3)):
      per_replica(cls, (states, items), lambda l, s, x: l(s, mask=x))

    def make_model():
      config = tam.ModelConfig(embedding_dim=D, num_heads=3, dropout=0.0, attention_dropout=0.0,
                               table_dropout=0.0)
      return tam.SessionRetrievalModel(config, N)

    data = tf.data.Dataset.from_tensor_slices({"items": items, "target": targets}).batch(16)
    single = make_model()
    single.create_weights(max_length=items.shape[1])
    with strategy.scope():
      mirrored = make_model()
      mirrored.create_weights(max_length=items.shape[1])
      mirrored.compile(optimizer=tf.keras.optimizers.SGD(0.5))
    mirrored.set_weights(single.get_weights())
    single.compile(optimizer=tf.keras.optimizers.SGD(0.5))
    # One step on the same 16 examples: gradients of the global mean on both.
    first = data.take(1)
    single.fit(first, verbose=0)
    mirrored.fit(first, verbose=0)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
      np.testing.assert_allclose(a, b, atol=1e-5)
    # Evaluation over 44 examples (a partial last batch) aggregates across replicas.
    want = single.evaluate(data, return_dict=True, verbose=0)
    got = mirrored.evaluate(data, return_dict=True, verbose=0)
    for name in ("hr_at_5", "mrr_at_10", "ndcg_at_20", "hr_at_20"):
      np.testing.assert_allclose(got[name], want[name], atol=1e-6)
    # Each replica returns its share of the global mean; Keras sums the shares.
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    assert 0 < want["hr_at_20"] < 1, want
    def uniform_model():
      config = tam.ModelConfig(embedding_dim=D, num_heads=3, initialization="uniform")
      model = tam.SessionRetrievalModel(config, N)
      model.create_weights(max_length=6, seed=5)
      return model

    alone = uniform_model()
    with strategy.scope():
      replicated = uniform_model()
    for variable, mirrored_variable in zip(alone.trainable_variables,
                                           replicated.trainable_variables):
      assert len(mirrored_variable.values) == 2
      for component in mirrored_variable.values:  # Both replicas draw the one-device values.
        np.testing.assert_array_equal(component.numpy(), variable.numpy())
    print("MIRRORED_OK")
""")


def test_mirrored_strategy_two_replicas():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)
  assert "MIRRORED_OK" in result.stdout, result.stderr[-5000:]


# ---------------------------------------------------------------------------------------------
# Learning on synthetic sessions (data/ is the lead's pipeline).


def test_learns_more_than_popularity():
  from data import examples, synthetic  # pylint: disable=import-outside-toplevel
  num_items = 300
  sessions = synthetic.generate_sessions(num_items=num_items, num_sessions=3000, seed=3)
  train = examples.expand_prefixes(sessions[:2400], max_length=20)
  test = examples.expand_prefixes(sessions[2400:], max_length=20)

  # Popularity baseline: the 20 most frequent training targets for every test example.
  counts = np.bincount(train["target"], minlength=num_items + 1)
  counts[0] = -1
  top20 = np.argsort(-counts, kind="stable")[:20]
  popularity_hr20 = np.isin(test["target"], top20).mean()

  tf.keras.utils.set_random_seed(0)
  config = tam.ModelConfig(embedding_dim=32, num_heads=4)
  model = tam.SessionRetrievalModel(config, num_items)
  model.create_weights(max_length=20)
  model.compile(optimizer=tf.keras.optimizers.Adam(5e-3))
  model.fit(tf.data.Dataset.from_tensor_slices(train).shuffle(20000, seed=0).batch(100),
            epochs=3, verbose=0)
  results = model.evaluate(tf.data.Dataset.from_tensor_slices(test).batch(500),
                           return_dict=True, verbose=0)
  print(f"HR@20 model {100 * results['hr_at_20']:.2f}%, popularity {100 * popularity_hr20:.2f}%")
  assert results["hr_at_20"] > popularity_hr20 + 0.15, (results, popularity_hr20)
