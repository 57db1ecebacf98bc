"""Session graph and item encoders against plain-Python/NumPy SR-GNN and SGNN-HN references."""

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

import tfrs_attenmixer as tam
from tfrs_attenmixer import session_graph as graph_lib
import tensorflow as tf

NUM_ITEMS = 12
DIM = 8
ENCODERS = [tam.EmbeddingEncoder, tam.SRGNNEncoder, tam.SGNNHNEncoder]


def pad_batch(sessions, length, rng):
  """Rows of `length` ids, each session at a random offset (left, right or both-side padding)."""
  items = np.zeros((len(sessions), length), np.int32)
  for row, session in enumerate(sessions):
    start = rng.integers(0, length - len(session) + 1)
    items[row, start:start + len(session)] = session
  return items


def srgnn_graph(session):
  """SR-GNN's `Data.get_slice` for one unpadded session: nodes, alias, A = [A_in | A_out]."""
  nodes = np.unique(session)
  alias = [int(np.where(nodes == item)[0][0]) for item in session]
  a = np.zeros((len(nodes), len(nodes)))
  for u, v in zip(alias[:-1], alias[1:]):
    a[u][v] = 1
  sum_in = a.sum(0)
  sum_in[sum_in == 0] = 1
  sum_out = a.sum(1)
  sum_out[sum_out == 0] = 1
  a_in = a / sum_in
  a_out = a.T / sum_out
  return nodes, alias, np.concatenate([a_in, a_out]).T


# ---------------------------------------------------------------------------------------------
# Session graph.


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    sessions=st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=10), min_size=1, max_size=5),
    extra=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_graph_equals_srgnn_construction(sessions, extra, seed):
  length = max(map(len, sessions)) + extra
  items = pad_batch(sessions, length, np.random.default_rng(seed))
  graph = graph_lib.session_graph(tf.constant(items))
  for row, session in enumerate(sessions):
    nodes, alias, a = srgnn_graph(session)
    n = len(nodes)
    valid = items[row] != 0
    np.testing.assert_array_equal(graph.nodes[row, :n], nodes)
    np.testing.assert_array_equal(graph.nodes[row, n:], 0)
    np.testing.assert_array_equal(graph.node_mask[row], np.arange(length) < n)
    np.testing.assert_array_equal(graph.alias[row][valid], alias)
    adjacency_in = graph.adjacency_in[row].numpy()
    adjacency_out = graph.adjacency_out[row].numpy()
    np.testing.assert_allclose(adjacency_in[:n, :n], a[:, :n], rtol=1e-6)
    np.testing.assert_allclose(adjacency_out[:n, :n], a[:, n:], rtol=1e-6)
    assert not adjacency_in[n:].any() and not adjacency_in[:, n:].any()
    assert not adjacency_out[n:].any() and not adjacency_out[:, n:].any()


def test_graph_example_with_repeats():
  # Session 3 4 3 5 5: edges 3->4, 4->3, 3->5, 5->5 (a self-loop); padded on the left.
  graph = graph_lib.session_graph(tf.constant([[0, 0, 3, 4, 3, 5, 5]]))
  np.testing.assert_array_equal(graph.nodes[0, :3], [3, 4, 5])
  np.testing.assert_array_equal(graph.alias[0, 2:], [0, 1, 0, 2, 2])
  np.testing.assert_allclose(graph.adjacency_out[0, :3, :3],
                             [[0, .5, .5], [1, 0, 0], [0, 0, 1]])
  np.testing.assert_allclose(graph.adjacency_in[0, :3, :3],
                             [[0, 1, 0], [1, 0, 0], [.5, 0, .5]])


def test_graph_under_xla():
  items = pad_batch([[1, 2, 1, 3], [5], [4, 4, 2]], 6, np.random.default_rng(0))
  eager = graph_lib.session_graph(tf.constant(items))
  compiled = tf.function(graph_lib.session_graph, jit_compile=True)(tf.constant(items))
  for a, b in zip(eager, compiled):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


# ---------------------------------------------------------------------------------------------
# NumPy references of the encoders (one session at a time, from the papers' equations).


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _gated_graph_step(h, a_in, a_out, w):
  """SR-GNN eq. 1-5 with SR-GNN's gate names: reset r, input (update) z, new n."""
  messages = np.concatenate([a_in @ (h @ w["in"][0] + w["in"][1]) + w["b_iah"],
                             a_out @ (h @ w["out"][0] + w["out"][1]) + w["b_oah"]], axis=-1)
  gi = messages @ w["gru_kernel"] + w["gru_bias"][0]
  gh = h @ w["gru_recurrent"] + w["gru_bias"][1]
  (i_z, i_r, i_n), (h_z, h_r, h_n) = np.split(gi, 3, -1), np.split(gh, 3, -1)  # Keras order z, r, n
  r = _sigmoid(i_r + h_r)
  z = _sigmoid(i_z + h_z)
  n = np.tanh(i_n + r * h_n)
  return n + z * (h - n)


def reference_encoder(encoder, session):
  """States [n, d] of one session for an encoder (dropout off)."""
  table = encoder.item_table.numpy()
  if isinstance(encoder, tam.EmbeddingEncoder):
    return _normalize(table[session])
  nodes, alias, a = srgnn_graph(session)
  count = len(nodes)
  a_in, a_out = a[:, :count], a[:, count:]
  cell = encoder.cell
  pair = lambda dense: (dense.kernel.numpy(), dense.bias.numpy())
  w = {"in": pair(cell.incoming), "out": pair(cell.outgoing),
       "b_iah": cell.incoming_bias.numpy(), "b_oah": cell.outgoing_bias.numpy(),
       "gru_kernel": cell.gru.kernel.numpy(), "gru_recurrent": cell.gru.recurrent_kernel.numpy(),
       "gru_bias": cell.gru.bias.numpy()}
  h = _normalize(table[nodes])
  if isinstance(encoder, tam.SRGNNEncoder):
    for _ in range(encoder.steps):
      h = _gated_graph_step(h, a_in, a_out, w)
  else:
    lin = lambda dense, x: x @ dense.kernel.numpy() + dense.bias.numpy()
    h0, star, scale = h, h.mean(0), 1 / np.sqrt(DIM)
    for step in range(encoder.steps):
      h = _gated_graph_step(h, a_in, a_out, w)
      alpha = _sigmoid(scale * lin(encoder.item_gate_query, h) @ lin(encoder.star_gate_key, star))
      h = (1 - alpha[:, None]) * h + alpha[:, None] * star
      if step == encoder.steps - 1:
        break  # the final star is not an output
      logits = scale * lin(encoder.item_read_key, h) @ lin(encoder.star_read_query, star)
      beta = np.exp(logits - logits.max())
      star = (beta / beta.sum()) @ h
    g = _sigmoid(lin(encoder.highway, np.concatenate([h0, h], -1)))
    h = g * h0 + (1 - g) * h
  return _normalize(h[alias])


@pytest.fixture
def float64_policy():
  tf.keras.mixed_precision.set_global_policy("float64")
  yield
  tf.keras.mixed_precision.set_global_policy("float32")


def make_encoder(cls, steps=2, **kwargs):
  if cls is not tam.EmbeddingEncoder:
    kwargs["steps"] = steps
  return cls(NUM_ITEMS, embedding_dim=DIM, dropout=0.0, **kwargs)


def randomize(layer, rng):
  for weight in layer.weights:
    weight.assign(rng.normal(scale=0.5, size=weight.shape).astype(weight.dtype.as_numpy_dtype))


SESSIONS = [[3], [1, 2, 1, 3, 3], [7, 7], [4, 9, 4, 9, 4, 12, 11], [5, 6, 5], [2, 8, 1, 3, 4, 5]]


@pytest.mark.parametrize("cls", ENCODERS)
@pytest.mark.parametrize("steps", [1, 3])
def test_encoder_matches_reference(cls, steps, float64_policy):
  rng = np.random.default_rng(steps)
  items = pad_batch(SESSIONS, 9, rng)
  encoder = make_encoder(cls, steps)
  encoder(items)
  randomize(encoder, rng)
  states = encoder(items).numpy()
  assert states.shape == (len(SESSIONS), 9, DIM) and states.dtype == np.float64
  for row, session in enumerate(SESSIONS):
    valid = items[row] != 0
    np.testing.assert_allclose(states[row][valid], reference_encoder(encoder, session),
                               rtol=1e-9, atol=1e-12)
    assert not states[row][~valid].any()


@pytest.mark.parametrize("cls", ENCODERS)
def test_padding_and_batch_mates_never_change_states(cls):
  rng = np.random.default_rng(1)
  encoder = make_encoder(cls)
  sessions = [list(rng.integers(1, NUM_ITEMS + 1, size=n)) for n in range(1, 21)]
  batch = encoder(pad_batch(sessions, 23, rng)).numpy()
  for row, session in enumerate(sessions):
    for left, right in ((0, 0), (4, 0), (0, 3)):
      items = np.array([[0] * left + session + [0] * right], np.int32)
      alone = encoder(items).numpy()[0, left:left + len(session)]
      batch_row = batch[row][np.any(batch[row] != 0, axis=-1)]
      np.testing.assert_allclose(alone, batch_row, atol=2e-6)


@pytest.mark.parametrize("cls", ENCODERS)
def test_mask_table_and_config(cls):
  encoder = make_encoder(cls, normalize=True)
  items = tf.constant([[0, 0, 4, 2], [1, 0, 0, 0]])
  states = encoder(items)
  np.testing.assert_array_equal(states._keras_mask.numpy(), items.numpy() != 0)
  assert encoder.item_table.shape == (NUM_ITEMS + 1, DIM)
  np.testing.assert_allclose(np.linalg.norm(states.numpy()[items.numpy() != 0], axis=-1), 1,
                             rtol=1e-5)
  if cls is tam.EmbeddingEncoder:
    np.testing.assert_allclose(states[0, 2].numpy(), _normalize(encoder.item_table[4].numpy()),
                               rtol=1e-5)
  clone = cls.from_config(encoder.get_config())
  assert clone.get_config() == encoder.get_config()
  clone(items)
  clone.set_weights(encoder.get_weights())
  np.testing.assert_array_equal(clone(items).numpy(), states.numpy())


@pytest.mark.parametrize("cls", ENCODERS)
def test_gradients_reach_every_variable(cls):
  rng = np.random.default_rng(2)
  encoder = make_encoder(cls)
  items = pad_batch([[1, 2, 1, 3], [5], [4, 4, 2, 7]], 6, rng)
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(encoder(items, training=True) * rng.normal(size=(3, 6, DIM)))
  for variable, grad in zip(encoder.trainable_variables,
                            tape.gradient(loss, encoder.trainable_variables)):
    assert grad is not None, variable.name
    grad = tf.convert_to_tensor(grad).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).max() > 0, variable.name
  expected = {tam.EmbeddingEncoder: 1, tam.SRGNNEncoder: 10, tam.SGNNHNEncoder: 20}[cls]
  assert len(encoder.trainable_variables) == expected


@pytest.mark.parametrize("cls", ENCODERS)
def test_xla_and_mixed_bfloat16(cls):
  items = pad_batch([[1, 2, 1, 3], [5], [4, 4, 2, 7]], 6, np.random.default_rng(3))
  encoder = make_encoder(cls)
  eager = encoder(items).numpy()
  compiled = tf.function(lambda x, t: encoder(x, training=t), jit_compile=True)
  np.testing.assert_allclose(compiled(items, False).numpy(), eager, atol=1e-5)
  assert np.isfinite(compiled(items, True).numpy()).all()

  mixed = make_encoder(cls, dtype="mixed_bfloat16")
  mixed(items)
  mixed.set_weights(encoder.get_weights())
  out = mixed(items)
  assert out.dtype == tf.bfloat16 and mixed.item_table.dtype == tf.float32
  np.testing.assert_allclose(tf.cast(out, tf.float32).numpy(), eager, atol=0.05)


def test_dropout_only_in_training():
  encoder = tam.EmbeddingEncoder(NUM_ITEMS, embedding_dim=DIM, dropout=0.5)
  items = np.array([[1, 2, 3]], np.int32)
  np.testing.assert_array_equal(encoder(items).numpy(), encoder(items, training=False).numpy())
  assert (encoder(items, training=True).numpy() == 0).sum() > 0


def test_normalize_after_dropout_keeps_training_states_unit():
  items = np.array([[0, 1, 2, 3]], np.int32)
  plain, renormalized = (tam.EmbeddingEncoder(NUM_ITEMS, embedding_dim=DIM, dropout=0.5,
                                              normalize_after_dropout=again)
                         for again in (False, True))
  plain.build(None)
  renormalized.build(None)
  renormalized.item_table.assign(plain.item_table)
  norms = np.linalg.norm(renormalized(items, training=True).numpy()[0], axis=-1)
  np.testing.assert_allclose(norms, [0, 1, 1, 1], rtol=1e-5)  # Padding stays zero.
  assert abs(np.linalg.norm(plain(items, training=True).numpy()[0, 1:], axis=-1) - 1).max() > 0.05
  np.testing.assert_allclose(renormalized(items, training=False).numpy(),
                             plain(items, training=False).numpy(), rtol=1e-6)
  assert renormalized.get_config()["normalize_after_dropout"]

