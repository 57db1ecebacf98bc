"""The full-softmax training loss over the whole catalogue, with its gradients computed by hand.

These pieces, put together by `SessionRetrievalModel.full_softmax_gradients`, give the same loss
and gradients as differentiating `SessionRetrievalModel.compute_loss(batch, training=True)` (normalised, dropped-out item table,
scaled cosine scores, softmax cross-entropy over all N items), but runs each part where it is
fastest on a CPU:

1. `candidate_rows` (XLA, one pass over the table): rows 1..N of the item table, dropped out
   (`dropout.CounterDropout`'s mask for the given keys), scaled by `scale / |E_i|` and cast to
   the compute dtype: `R` [N, d], so that the scores are one product `Z = q R^T`. It also keeps
   the row factors and the mask (one byte per element) for step 3.
2. The products `q R^T`, `P R` and `P^T q` and the softmax `P` [B, N] (TensorFlow's native,
   oneDNN kernels, which run bfloat16 products several times faster than XLA's CPU dot). The
   one-hot part of the cross-entropy's gradient `P - Y` is never formed over [B, N]: it is the
   B rows `-R[t_b]` of the queries' gradient and B rows of the table's.
3. `table_gradient` (XLA, one pass): the chain rule back through step 1 (the row
   normalisation's projection, the mask), plus the B rows of step 2 and the item lookups' rows,
   plus the L2 term, as one dense [N + 1, d] float32 gradient. Row sums use XLA's dot, which
   its CPU backend runs several times faster than a reduction.

Shapes: queries [B, d] float32, targets int [B] in 1..N, table [N + 1, d] (row 0 padding).
Pass the table as a tensor, not a `tf.Variable`: these are module-level `tf.function`s, and one
traced inside another function with a variable can be reused for another variable of the same
shape.
"""

from typing import Optional, Tuple

import tensorflow as tf

from tfrs_attenmixer import dropout as dropout_lib


def _keep_scale(row_ids: tf.Tensor, dim, keys: tf.Tensor, rate: float) -> tf.Tensor:
  """float32 [rows, d]: the dropout factor of the given table rows, 1 / (1 - rate) or 0."""
  keep = dropout_lib.rows_random_bits(row_ids, dim, keys) >= dropout_lib.drop_threshold(rate)
  return tf.where(keep, tf.constant(1.0 / (1.0 - rate), tf.float32), 0.0)


def _row_sums(x: tf.Tensor) -> tf.Tensor:
  """[rows, 1]: the sums of the rows of float32 [rows, d]. XLA's CPU dot sums rows several times
  faster than its reduction does."""
  return tf.matmul(x, tf.ones([tf.shape(x)[1], 1], x.dtype))


def _row_factors(rows: tf.Tensor, scale: float, normalize: bool) -> tf.Tensor:
  """float32 [rows, 1]: `a_i = scale / max(|E_i|, 1e-6)` (or `scale` unnormalised)."""
  if not normalize:
    return tf.fill([tf.shape(rows)[0], 1], tf.constant(scale, tf.float32))
  return scale * tf.math.rsqrt(tf.maximum(_row_sums(tf.square(rows)), 1e-12))


def _rows_gradient(rows: tf.Tensor, factors: tf.Tensor, grad: tf.Tensor,
                   keep: Optional[tf.Tensor], scale: float, normalize: bool,
                   row_dots: Optional[tf.Tensor] = None) -> tf.Tensor:
  """float32 [rows, d]: d loss / d E_i for the gradient `grad` of `R_i = a_i k_i E_i`.

  `dL/dE_i = a_i k_i g_i - (a_i^2 / scale^2) (g_i . R_i) E_i`, since `1 / |E_i|^2 =
  (a_i / scale)^2`; the second term only where the norm's clip at 1e-6 does not bite.
  `row_dots` [rows, 1] are the `g_i . R_i` when the caller has them; otherwise they are summed
  here.
  """
  if keep is not None:
    grad *= keep
  result = factors * grad
  if normalize:
    if row_dots is None:
      row_dots = factors * _row_sums(grad * rows)
    unclipped = factors < scale * 1e6
    result -= tf.where(unclipped, factors**2 * row_dots / scale**2, 0.0) * rows
  return result


@tf.function(jit_compile=True)
def candidate_rows(table: tf.Tensor, keys: tf.Tensor, rate: float, scale: float,
                   normalize: bool, dtype: tf.DType
                  ) -> Tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
  """`R` [N, d] in `dtype`: `scale * dropout(E_i) / |E_i|` for the rows i = 1..N of `table`
  (module doc, step 1); also, for `table_gradient`, the row factors float32 [N, 1] and the
  dropout mask bool [N, d] (None without dropout)."""
  rows = tf.cast(table[1:], tf.float32)
  factors = _row_factors(rows, scale, normalize)
  scaled = rows * factors
  keep = None
  if rate:
    keep = _keep_scale(tf.range(1, tf.shape(table)[0]), tf.shape(table)[1], keys, rate)
    scaled *= keep
    keep = keep > 0  # one byte per element
  return tf.cast(scaled, dtype), factors, keep


@tf.function(jit_compile=True)
def table_gradient(table: tf.Tensor, keys: tf.Tensor, factors: tf.Tensor,
                   keep: Optional[tf.Tensor], rate: float, scale: float, normalize: bool,
                   grad_rows: tf.Tensor, row_ids: tf.Tensor, row_values: tf.Tensor,
                   lookup_ids: tf.Tensor, lookup_values: tf.Tensor, l2: float,
                   scores: Optional[Tuple[tf.Tensor, tf.Tensor, tf.Tensor]] = None
                  ) -> tf.Tensor:
  """float32 [N + 1, d]: the gradient of the table (module doc, step 3).

  With `scores = (P, Z, w)` (the softmax, the logits [B, N] and the example weight of
  `softmax_products`) the normalisation's projections `grad_rows_i . R_i = w sum_b P_bi Z_bi`
  are summed over the batch instead of over `d`: fewer elements when B < d.

  Args:
    table: the item table [N + 1, d].
    keys, rate, scale, normalize: as given to `candidate_rows`.
    factors, keep: the row factors and the dropout mask returned by `candidate_rows`.
    grad_rows: [N, d] the gradient of `R` without its sparse rows.
    row_ids, row_values: int [k] row indices of `R` (0..N-1) and [k, d] values added to them.
    lookup_ids, lookup_values: int [m] table rows and [m, d] gradients of looked-up embeddings.
    l2: weight of the `l2 * table` term.
    scores: optional, see above.
  """
  table = tf.cast(table, tf.float32)
  row_dots = None
  if scores is not None and normalize:
    probabilities, logits, weight = scores
    row_dots = weight * tf.reduce_sum(
        tf.cast(probabilities, tf.float32) * tf.cast(logits, tf.float32), axis=0)[:, None]
  dense = tf.pad(_rows_gradient(table[1:], factors, tf.cast(grad_rows, tf.float32),
                                None if keep is None else
                                tf.where(keep, tf.constant(1.0 / (1.0 - rate), tf.float32), 0.0),
                                scale, normalize, row_dots), [[1, 0], [0, 0]])
  if l2:
    dense += l2 * table
  # The sparse rows of R's gradient go through the same (row-wise linear) chain rule alone.
  sparse_ids = tf.cast(row_ids, tf.int32) + 1
  sparse_keep = (_keep_scale(sparse_ids, tf.shape(table)[1], keys, rate) if rate else None)
  sparse = _rows_gradient(tf.gather(table, sparse_ids), tf.gather(factors, sparse_ids - 1),
                          tf.cast(row_values, tf.float32), sparse_keep, scale, normalize)
  ids = tf.concat([sparse_ids, tf.cast(lookup_ids, tf.int32)], axis=0)
  values = tf.concat([sparse, tf.cast(lookup_values, tf.float32)], axis=0)
  return tf.tensor_scatter_nd_add(dense, ids[:, None], values)


# Largest |logit| for which `-log softmax(Z)[target]` cannot underflow in float32 or bfloat16:
# a gap of 2 * 40 between logits gives probabilities of e^-80 / N, far above 1e-38.
BOUNDED_LOGIT = 40.0


def softmax_products(queries: tf.Tensor, rows: tf.Tensor, targets: tf.Tensor,
                     example_weight: tf.Tensor, bounded: bool = True
                    ) -> Tuple[tf.Tensor, ...]:
  """The softmax cross-entropy of `Z = q R^T` and the dense parts of its gradients (native ops).

  Args:
    queries: float32 [B, d].
    rows: `R` [N, d] in the compute dtype.
    targets: int [B] in 1..N.
    example_weight: scalar, d loss / d (one example's cross-entropy).
    bounded: every |logit| is at most `BOUNDED_LOGIT` (unit queries and rows of norm at most
      `BOUNDED_LOGIT`), so the loss is read off the softmax; otherwise it is computed as
      `logsumexp(Z) - Z[target]`, which costs one more pass over Z.

  Returns:
    per_example: float32 [B] cross-entropies.
    grad_queries: float32 [B, d], the whole gradient of the queries.
    grad_rows: [N, d] (compute dtype) `w P^T q`, the gradient of `R` without the one-hot rows.
    target_rows: float32 [B, d] `-w q`, the one-hot rows to add at rows `targets - 1`.
    probabilities, logits: `P` and `Z` [B, N] (compute dtype), for `table_gradient`'s `scores`.
  """
  dtype = rows.dtype
  q = tf.cast(queries, dtype)
  logits = tf.matmul(q, rows, transpose_b=True)  # [B, N]
  probabilities = tf.nn.softmax(logits)
  index = tf.cast(targets, tf.int32) - 1
  if bounded:
    target_probability = tf.gather(probabilities, index, axis=1, batch_dims=1)
    per_example = -tf.math.log(tf.cast(target_probability, tf.float32))
  else:
    per_example = (tf.reduce_logsumexp(tf.cast(logits, tf.float32), axis=1) -
                   tf.cast(tf.gather(logits, index, axis=1, batch_dims=1), tf.float32))
  weight = tf.cast(example_weight, tf.float32)
  grad_queries = weight * (tf.cast(tf.matmul(probabilities, rows), tf.float32) -
                           tf.cast(tf.gather(rows, index), tf.float32))
  weighted = weight * tf.cast(queries, tf.float32)
  grad_rows = tf.matmul(probabilities, tf.cast(weighted, dtype), transpose_a=True)
  return per_example, grad_queries, grad_rows, -weighted, probabilities, logits
