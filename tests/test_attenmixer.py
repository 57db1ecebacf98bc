"""AttenMixer against a NumPy transcription of SPEC.md; masking, gradients, saving, XLA, bf16."""

import numpy as np
import pytest

import tfrs_attenmixer as tam
import tensorflow as tf

DIM = 12


# ---------------------------------------------------------------------------------------------
# NumPy reference, written from SPEC.md (steps 2-5) one session at a time.


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def reference(states, mask, w, opts):
  """Atten-Mixer of each row of `states` [batch, length, d] with padding `mask`.

  Returns the summaries [batch, d], level maps [batch, H, L, length] and pooled maps [batch, H,
  length]. `w` holds the layer's weights, `opts` its options.
  """
  batch, length, d = states.shape
  heads, levels = opts["num_heads"], opts["num_levels"]
  dh = d // heads
  outputs, level_maps, pooled_maps = [], [], []
  for b in range(batch):
    valid = np.flatnonzero(mask[b])
    session = states[b, valid]  # the n valid items, oldest first
    n = len(session)
    # Slot k holds the item that level k + 1 adds: v_{n-k} (recent) or v_{k+1} (earliest).
    slots = []
    for k in range(levels):
      j = n - 1 - k if opts["level_selection"] == "recent" else k
      slots.append(session[j] if 0 <= j < n else np.zeros(d))
    queries = []
    for level in range(1, levels + 1):
      if opts["level_aggregation"] == "sum":
        group = np.sum(slots[:level], axis=0)
      else:
        group = np.concatenate(slots[:level])
      queries.append(group @ w["levels"][level - 1][0] + w["levels"][level - 1][1])
    queries = np.stack(queries)  # [L, d]
    if opts["normalize_queries_over_levels"]:
      queries = queries / (np.linalg.norm(queries, axis=0, keepdims=True) + 1e-12)

    q = queries @ w["query"][0] + w["query"][1]
    k = states[b] @ w["key"][0] + w["key"][1]  # every position; padding is masked below
    v = states[b] @ w["value"][0] + w["value"][1]
    if opts["head_split"] == "transpose":
      q_heads = [q[:, h * dh:(h + 1) * dh] for h in range(heads)]
      k_heads = [k[:, h * dh:(h + 1) * dh] for h in range(heads)]
    else:  # the code's plain reshape of [n, d] into [heads, n, dh]
      q_heads = list(q.reshape(heads, levels, dh))
      k_heads = list(k.reshape(heads, length, dh))

    maps = np.zeros((heads, levels, length))
    pooled = np.zeros((heads, length))
    summary = []
    for h in range(heads):
      for level in range(levels):
        logits = k_heads[h] @ q_heads[h][level]  # [length]
        if opts["attention_scoring"] == "softmax":
          logits = logits / np.sqrt(d if opts["attention_temperature"] == "model_dim" else dh)
        else:
          logits = 2.0 / (1.0 + np.exp(-logits))
        if opts["mask_level_attention"]:
          maps[h, level, valid] = _softmax(logits[valid])
        else:
          maps[h, level] = _softmax(logits)
      if opts["pooling"] == "lp":
        p = opts["lp_norm"]
        a = np.sum(maps[h] ** p, axis=0) ** (1.0 / p)
      elif opts["pooling"] == "mean":
        a = maps[h].mean(axis=0)
      else:
        a = maps[h].max(axis=0)
      if opts["pooled_normalization"] == "sum":
        pooled[h, valid] = a[valid] / a[valid].sum()
      else:
        pooled[h, valid] = _softmax(2.0 * a[valid])
      summary.append(pooled[h] @ v[:, h * dh:(h + 1) * dh])
    summary = np.concatenate(summary)
    if opts["layer_norm"]:
      summary = (summary - summary.mean()) / np.sqrt(summary.var() + 1e-8)
      summary = summary * w["norm"][0] + w["norm"][1]
    if opts["normalize_readout"]:
      summary = summary / np.linalg.norm(summary)
    outputs.append(summary)
    level_maps.append(maps)
    pooled_maps.append(pooled)
  return np.stack(outputs), np.stack(level_maps), np.stack(pooled_maps)


# The layer's options but its dropout (each test sets it), at their defaults with two heads.
DEFAULTS = {name: value
            for name, value in tam.AttenMixerOptions(num_heads=2).layer_arguments().items()
            if name != "dropout"}

CASES = [
    {},
    dict(level_aggregation="concat"),
    dict(level_selection="earliest"),
    dict(level_selection="earliest", level_aggregation="concat"),
    dict(lp_norm=1.0),
    dict(lp_norm=2.0),
    dict(lp_norm=7.5),
    dict(pooling="mean"),
    dict(pooling="max"),
    dict(attention_scoring="sigmoid_softmax"),
    dict(attention_temperature="model_dim"),
    dict(attention_temperature="model_dim", num_heads=4),
    dict(normalize_readout=True),
    dict(normalize_readout=True, layer_norm=False),
    dict(pooled_normalization="softmax"),
    dict(normalize_queries_over_levels=True),
    dict(num_heads=1),
    dict(num_heads=4),
    dict(num_heads=3, head_split="reshape"),
    dict(mask_level_attention=False),
    dict(layer_norm=False),
    dict(num_levels=1),
    dict(num_levels=7),
    dict(num_levels=12, level_aggregation="concat"),  # more levels than positions
    # The authors' code, every difference at once.
    dict(num_levels=7, level_aggregation="concat", head_split="reshape",
         attention_scoring="sigmoid_softmax", mask_level_attention=False,
         pooled_normalization="softmax", normalize_queries_over_levels=True),
]


def _random_cases(count, seed=0):
  """A seeded sample of the full option grid, on top of the hand-picked cases."""
  grid = dict(num_levels=[1, 2, 3, 5, 11], level_aggregation=["sum", "concat"],
              level_selection=["recent", "earliest"], num_heads=[1, 2, 3, 4, 6],
              head_split=["transpose", "reshape"],
              attention_scoring=["softmax", "sigmoid_softmax"],
              attention_temperature=["head_dim", "model_dim"],
              mask_level_attention=[True, False], pooling=["lp", "mean", "max"],
              lp_norm=[0.5, 1.0, 3.0, 4.0, 10.0], pooled_normalization=["sum", "softmax"],
              normalize_queries_over_levels=[True, False], layer_norm=[True, False],
              normalize_readout=[True, False])
  rng = np.random.default_rng(seed)
  return [{key: values[rng.integers(len(values))] for key, values in grid.items()}
          for _ in range(count)]


def random_batch(rng, lengths, length, dtype=np.float64):
  """Unit-norm random states [batch, length, d] (padding too) and a mask whose valid block sits
  at a random offset of each row."""
  states = rng.normal(size=(len(lengths), length, DIM))
  states /= np.linalg.norm(states, axis=-1, keepdims=True)
  mask = np.zeros((len(lengths), length), bool)
  for row, n in enumerate(lengths):
    start = rng.integers(0, length - n + 1)
    mask[row, start:start + n] = True
  return states.astype(dtype), mask


def randomize(layer, rng, scale=0.5):
  """Replaces every weight with random values (LayerNorm and biases included)."""
  for weight in layer.weights:
    weight.assign(rng.normal(scale=scale, size=weight.shape).astype(weight.dtype.as_numpy_dtype))


def weights_of(layer):
  pair = lambda dense: (dense.kernel.numpy(), dense.bias.numpy())
  w = {"levels": [pair(p) for p in layer.level_projections], "query": pair(layer.query_projection),
       "key": pair(layer.key_projection), "value": pair(layer.value_projection)}
  if layer.output_norm is not None:
    w["norm"] = (layer.output_norm.gamma.numpy(), layer.output_norm.beta.numpy())
  return w


@pytest.fixture
def float64_policy():
  tf.keras.mixed_precision.set_global_policy("float64")
  yield
  tf.keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("case", CASES + _random_cases(16),
                         ids=lambda case: ",".join(f"{k}={v}" for k, v in case.items()) or "paper")
def test_matches_numpy_reference(case, float64_policy):
  opts = {**DEFAULTS, **case}
  rng = np.random.default_rng(1)
  states, mask = random_batch(rng, lengths=[1, 2, 3, 4, 7, 9], length=9)
  layer = tam.AttenMixer(dropout=0.0, **opts)
  layer(states, mask=mask)
  randomize(layer, rng)

  summary, maps = layer(states, mask=mask, return_attention=True)
  expected, expected_levels, expected_pooled = reference(states, mask, weights_of(layer), opts)
  assert summary.dtype == tf.float64
  np.testing.assert_allclose(maps["levels"].numpy(), expected_levels, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(maps["pooled"].numpy(), expected_pooled, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(summary.numpy(), expected, rtol=1e-9, atol=1e-9)


def test_float32_matches_reference_to_1e5():
  rng = np.random.default_rng(2)
  states, mask = random_batch(rng, lengths=[1, 3, 6, 10], length=10, dtype=np.float32)
  layer = tam.AttenMixer(dropout=0.0, num_heads=3)
  layer(states, mask=mask)
  randomize(layer, rng)
  expected, _, _ = reference(states.astype(np.float64), mask, weights_of(layer),
                             {**DEFAULTS, "num_heads": 3})
  np.testing.assert_allclose(layer(states, mask=mask).numpy(), expected, atol=1e-5)


def test_reference_is_not_trivially_satisfied(float64_policy):
  """Sanity check of the test itself: the options change the reference's output."""
  rng = np.random.default_rng(3)
  states, mask = random_batch(rng, lengths=[4, 6], length=6)
  layer = tam.AttenMixer(dropout=0.0, num_levels=3, num_heads=2)
  layer(states, mask=mask)
  randomize(layer, rng)
  w = weights_of(layer)
  base, _, _ = reference(states, mask, w, DEFAULTS)
  for change in (dict(pooling="mean"), dict(lp_norm=2.0), dict(level_selection="earliest"),
                 dict(pooled_normalization="softmax"), dict(attention_scoring="sigmoid_softmax"),
                 dict(attention_temperature="model_dim"), dict(normalize_readout=True)):
    other, _, _ = reference(states, mask, w, {**DEFAULTS, **change})
    assert np.abs(other - base).max() > 1e-4, change


# ---------------------------------------------------------------------------------------------
# Masking.


PADDING_INVARIANT_CASES = [
    {}, dict(level_aggregation="concat", num_levels=7), dict(level_selection="earliest"),
    dict(attention_scoring="sigmoid_softmax", pooled_normalization="softmax",
         normalize_queries_over_levels=True, pooling="max"),
]


@pytest.mark.parametrize("case", PADDING_INVARIANT_CASES)
def test_padding_never_changes_the_output(case):
  rng = np.random.default_rng(4)
  layer = tam.AttenMixer(dropout=0.0, num_heads=3, **case)
  for n in (1, 2, 5):
    session = rng.normal(size=(1, n, DIM)).astype(np.float32)
    unpadded = layer(session).numpy()
    for left, right in ((3, 0), (0, 4), (2, 2), (15, 0)):
      padding = lambda k: rng.normal(size=(1, k, DIM)).astype(np.float32)  # garbage, masked out
      padded = np.concatenate([padding(left), session, padding(right)], axis=1)
      mask = np.r_[np.zeros(left, bool), np.ones(n, bool), np.zeros(right, bool)][None]
      np.testing.assert_allclose(layer(padded, mask=mask).numpy(), unpadded, atol=2e-6)


def test_mask_can_be_item_ids():
  rng = np.random.default_rng(5)
  states = rng.normal(size=(2, 4, DIM)).astype(np.float32)
  ids = np.array([[0, 0, 5, 9], [3, 1, 2, 0]], np.int32)
  layer = tam.AttenMixer(dropout=0.0, num_heads=2)
  np.testing.assert_array_equal(layer(states, mask=ids).numpy(),
                                layer(states, mask=ids != 0).numpy())


def test_unmasked_level_attention_depends_on_padding_as_documented():
  rng = np.random.default_rng(6)
  layer = tam.AttenMixer(dropout=0.0, num_heads=2, mask_level_attention=False)
  session = rng.normal(size=(1, 3, DIM)).astype(np.float32)
  padded = np.concatenate([np.zeros((1, 5, DIM), np.float32), session], axis=1)
  mask = np.r_[np.zeros(5, bool), np.ones(3, bool)][None]
  assert np.abs(layer(padded, mask=mask).numpy() - layer(session).numpy()).max() > 1e-4


def test_batch_of_lengths_1_to_20_matches_one_session_at_a_time():
  rng = np.random.default_rng(7)
  lengths = list(range(1, 21))
  states, mask = random_batch(rng, lengths, length=20, dtype=np.float32)
  layer = tam.AttenMixer(dropout=0.0, num_heads=4, num_levels=7)
  summary, maps = layer(states, mask=mask, return_attention=True)
  assert np.isfinite(summary.numpy()).all()
  pooled = maps["pooled"].numpy()
  np.testing.assert_allclose(pooled.sum(-1), 1.0, atol=1e-5)
  assert (pooled[np.broadcast_to(~mask[:, None, :], pooled.shape)] == 0).all()
  for row, n in enumerate(lengths):
    alone = layer(states[row:row + 1][mask[row:row + 1]][None]).numpy()
    np.testing.assert_allclose(summary[row].numpy(), alone[0], atol=2e-6)


def test_empty_row_gives_finite_output():
  layer = tam.AttenMixer(num_heads=2)
  out = layer(np.ones((2, 3, DIM), np.float32), mask=np.array([[0, 0, 0], [0, 1, 1]], bool))
  assert np.isfinite(out.numpy()).all()


def test_keras_mask_is_used_by_default():
  ids = tf.keras.Input([None], dtype=tf.int32)
  states = tf.keras.layers.Embedding(20, DIM, mask_zero=True)(ids)
  model = tf.keras.Model(ids, tam.AttenMixer(dropout=0.0, num_heads=2)(states))
  left = np.array([[0, 0, 4, 7, 3]], np.int32)
  np.testing.assert_allclose(model(left).numpy(), model(left[:, 2:]).numpy(), atol=2e-6)


# ---------------------------------------------------------------------------------------------
# Gradients, configuration, saving.


@pytest.mark.parametrize("case", [{}, CASES[-1], dict(pooling="max", level_selection="earliest")])
def test_gradients_reach_every_variable(case):
  # Max pooling sends a level gradient only where that level wins the max, so the batch holds
  # enough sessions for every level to win somewhere, and the weights are drawn from the seeded
  # generator. With three sessions level 1 lost everywhere in 2 of 60 draws (and once in CI);
  # with these eight it won somewhere in all of 300.
  rng = np.random.default_rng(8)
  lengths = [1, 3, 6, 2, 5, 4, 6, 6]
  states, mask = random_batch(rng, lengths=lengths, length=6, dtype=np.float32)
  states = tf.constant(states)
  layer = tam.AttenMixer(**{"num_heads": 2, "num_levels": 4, **case})
  layer(states, mask=mask)
  randomize(layer, rng)
  with tf.GradientTape() as tape:
    tape.watch(states)
    loss = tf.reduce_sum(
        layer(states, mask=mask, training=True) * rng.normal(size=(len(lengths), DIM)))
  variables = layer.trainable_variables
  assert len(variables) == 2 * layer.options.num_levels + 6 + 2 * layer.options.layer_norm
  for variable, grad in zip(variables, tape.gradient(loss, variables)):
    assert grad is not None and np.abs(grad.numpy()).max() > 0, variable.name


def test_lp_pooling_gradient_is_finite_with_padding():
  states = tf.constant(np.random.default_rng(9).normal(size=(2, 5, DIM)), tf.float32)
  mask = np.array([[0, 0, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
  layer = tam.AttenMixer(num_heads=2, dropout=0.0)
  with tf.GradientTape() as tape:
    tape.watch(states)
    loss = tf.reduce_sum(layer(states, mask=mask) ** 2)
  grads = tape.gradient(loss, [states] + layer.trainable_variables)
  assert all(np.isfinite(g.numpy()).all() for g in grads)
  assert np.abs(grads[0].numpy()[~mask]).max() == 0  # padding states do not matter


def test_config_round_trip():
  layer = tam.AttenMixer(**CASES[-1], num_heads=4, dropout=0.2, name="mixer")
  states, mask = random_batch(np.random.default_rng(10), [2, 5], 5, np.float32)
  layer(states, mask=mask)
  clone = tam.AttenMixer.from_config(layer.get_config())
  assert clone.get_config() == layer.get_config()
  clone(states, mask=mask)
  clone.set_weights(layer.get_weights())
  np.testing.assert_array_equal(clone(states, mask=mask).numpy(), layer(states, mask=mask).numpy())
  deserialized = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
  assert isinstance(deserialized, tam.AttenMixer) and deserialized.options == layer.options
  assert layer.options.num_levels == 7 and layer.options.attention_dropout == 0.2


def test_layer_defaults_are_the_model_config_defaults():
  config = tam.ModelConfig()
  assert tam.AttenMixer().options == tam.AttenMixerOptions()
  assert tam.AttenMixer(**config.layer_arguments()).options == tam.AttenMixerOptions()
  assert (config.num_levels, config.level_aggregation, config.pooling, config.lp_norm,
          config.attention_scoring, config.pooled_normalization) == (3, "sum", "lp", 4.0,
                                                                     "softmax", "sum")


@pytest.mark.parametrize("argument, value", [("level_aggregation", "max"), ("pooling", "lp2"),
                                             ("attention_scoring", "dot"),
                                             ("level_selection", "random"),
                                             ("head_split", "split"),
                                             ("pooled_normalization", "none"),
                                             ("attention_temperature", "d")])
def test_bad_option_names_the_argument(argument, value):
  with pytest.raises(ValueError, match=argument):
    tam.AttenMixer(**{argument: value})


def test_heads_must_divide_dim():
  with pytest.raises(ValueError, match="num_heads"):
    tam.AttenMixer(num_heads=5)(np.zeros((1, 2, DIM), np.float32))


def test_dropout_only_in_training():
  states, mask = random_batch(np.random.default_rng(11), [4, 6], 6, np.float32)
  layer = tam.AttenMixer(num_heads=2, dropout=0.5)
  np.testing.assert_array_equal(layer(states, mask=mask).numpy(),
                                layer(states, mask=mask, training=False).numpy())
  assert np.abs(layer(states, mask=mask, training=True).numpy() -
                layer(states, mask=mask).numpy()).max() > 1e-3


# ---------------------------------------------------------------------------------------------
# XLA and mixed precision (MirroredStrategy: tests/test_model.py runs every layer on 2 replicas).


@pytest.mark.parametrize("case", [{}, CASES[-1]])
def test_xla_matches_eager(case):
  states, mask = random_batch(np.random.default_rng(12), [1, 4, 8], 8, np.float32)
  layer = tam.AttenMixer(num_heads=3, **case)
  eager = layer(states, mask=mask).numpy()
  compiled = tf.function(lambda s, m, t: layer(s, mask=m, training=t), jit_compile=True)
  np.testing.assert_allclose(compiled(states, mask, False).numpy(), eager, atol=1e-5)
  assert np.isfinite(compiled(states, mask, True).numpy()).all()


def test_mixed_bfloat16_close_to_float32():
  states, mask = random_batch(np.random.default_rng(13), [1, 4, 8], 8, np.float32)
  layer = tam.AttenMixer(num_heads=3, dropout=0.0)
  reference_out = layer(states, mask=mask).numpy()
  mixed = tam.AttenMixer(num_heads=3, dropout=0.0, dtype="mixed_bfloat16")
  mixed(tf.cast(states, tf.bfloat16), mask=mask)
  mixed.set_weights(layer.get_weights())
  assert all(w.dtype == tf.float32 for w in mixed.weights)
  out, maps = mixed(tf.cast(states, tf.bfloat16), mask=mask, return_attention=True)
  assert out.dtype == tf.bfloat16 and maps["pooled"].dtype == tf.float32
  np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), reference_out, atol=0.1)


def test_option_grid_is_covered():
  """Every value of every option appears in the numerics cases."""
  cases = [{**DEFAULTS, **case} for case in CASES + _random_cases(16)]
  for option in ("level_aggregation", "level_selection", "head_split", "attention_scoring",
                 "mask_level_attention", "pooling", "pooled_normalization",
                 "normalize_queries_over_levels", "layer_norm"):
    assert len({case[option] for case in cases}) >= 2, option
  assert any(case["num_levels"] > 9 for case in cases)  # L above the padded length
  assert {1.0, 2.0, 4.0}.issubset({case["lp_norm"] for case in cases if case["pooling"] == "lp"})
  assert {case["num_heads"] for case in cases} >= {1, 2, 3, 4}
