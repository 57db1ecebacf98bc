"""TensorProto <-> numpy conversion with validation, and the server's per-request size limits.

Only numpy and the TensorFlow protos are used here (no TensorFlow runtime), so the client can use
this module too. Decoding never trusts the header: the shape is checked against the limits before
anything is allocated, and the data must match the shape exactly, as `tensor_content` (raw
little-endian bytes) or as the dtype's typed field (`int64_val`, `float_val`, ...). As in
`tf.make_ndarray`, a single typed value fills the whole tensor.
"""

import dataclasses
import math

import numpy as np
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.framework import types_pb2

from serving import status


@dataclasses.dataclass(frozen=True)
class _Kind:
  """How one DataType is held in numpy and in a TensorProto's typed fields."""
  numpy_dtype: np.dtype
  field: str  # the TensorProto field holding the values one by one


# The dtypes the server accepts and returns. The small integer types travel in `int_val`, half
# floats as their 16-bit patterns in `half_val`, strings as bytes in `string_val`.
_KINDS = {
    types_pb2.DT_FLOAT: _Kind(np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: _Kind(np.dtype(np.float64), "double_val"),
    types_pb2.DT_HALF: _Kind(np.dtype(np.float16), "half_val"),
    types_pb2.DT_INT8: _Kind(np.dtype(np.int8), "int_val"),
    types_pb2.DT_INT16: _Kind(np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT32: _Kind(np.dtype(np.int32), "int_val"),
    types_pb2.DT_INT64: _Kind(np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT8: _Kind(np.dtype(np.uint8), "int_val"),
    types_pb2.DT_UINT16: _Kind(np.dtype(np.uint16), "int_val"),
    types_pb2.DT_UINT32: _Kind(np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: _Kind(np.dtype(np.uint64), "uint64_val"),
    types_pb2.DT_BOOL: _Kind(np.dtype(np.bool_), "bool_val"),
    types_pb2.DT_STRING: _Kind(np.dtype(object), "string_val"),
}
_DTYPE_OF_NUMPY = {kind.numpy_dtype: dtype for dtype, kind in _KINDS.items()
                   if dtype != types_pb2.DT_STRING}
_VALUE_FIELDS = sorted({kind.field for kind in _KINDS.values()} | {
    "scomplex_val", "dcomplex_val", "resource_handle_val", "variant_val", "float8_val"})

# The deepest tensor accepted: TensorFlow's own limit is 254 dimensions.
MAX_RANK = 32
# Elements a decoded tensor may have when the caller sets no limit (the client decoding replies).
DEFAULT_MAX_ELEMENTS = 1 << 26


def dtype_name(dtype):
  """'DT_INT64' for types_pb2.DT_INT64; a readable name for unknown values too."""
  try:
    return types_pb2.DataType.Name(dtype)
  except ValueError:
    return "DataType(%d)" % dtype


def numpy_dtype(dtype):
  """The numpy dtype of a supported DataType (object for DT_STRING)."""
  return _kind(dtype, "").numpy_dtype


def _kind(dtype, alias):
  kind = _KINDS.get(dtype)
  if kind is None:
    raise status.invalid_argument("tensor parsing error: %s: unsupported dtype %s" % (
        status.quote(alias), dtype_name(dtype)))
  return kind


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-request size limits, checked on each input's shape before its data is decoded.

  max_batch_size: largest dimension 0 (the batch) of any input.
  max_session_length: largest dimension 1 of an input of rank >= 2 (the session length of
    `sessions` [batch, length], the candidate count of `candidates` [batch, c]).
  An input may hold at most max_batch_size * max_session_length elements.
  """
  max_batch_size: int = 1024
  max_session_length: int = 512

  def __post_init__(self):
    if self.max_batch_size < 1 or self.max_session_length < 1:
      raise ValueError("Limits must be positive, got %s" % (self,))

  @property
  def max_elements(self):
    return self.max_batch_size * self.max_session_length

  def check(self, alias, shape):
    """Raises RESOURCE_EXHAUSTED if an input of `shape` is over a limit."""
    if len(shape) >= 1 and shape[0] > self.max_batch_size:
      raise status.resource_exhausted(
          "input %s has batch size %d, over the server's limit of %d (--max_batch_size)" % (
              status.quote(alias), shape[0], self.max_batch_size))
    if len(shape) >= 2 and shape[1] > self.max_session_length:
      raise status.resource_exhausted(
          "input %s has length %d (dimension 1), over the server's limit of %d "
          "(--max_session_length)" % (status.quote(alias), shape[1], self.max_session_length))
    if math.prod(shape) > self.max_elements:
      raise status.resource_exhausted(
          "input %s of shape %s has %d elements, over the server's limit of %d" % (
              status.quote(alias), list(shape), math.prod(shape), self.max_elements))


def header(proto, alias):
  """(dtype, shape) of a TensorProto, checked: a supported dtype and a known, non-negative shape.

  Raises INVALID_ARGUMENT (TF Serving's "tensor parsing error") otherwise.
  """
  _kind(proto.dtype, alias)
  if proto.tensor_shape.unknown_rank:
    raise status.invalid_argument(
        "tensor parsing error: %s: the shape has unknown rank" % status.quote(alias))
  if len(proto.tensor_shape.dim) > MAX_RANK:
    raise status.invalid_argument("tensor parsing error: %s: rank %d is over %d" % (
        status.quote(alias), len(proto.tensor_shape.dim), MAX_RANK))
  shape = tuple(dim.size for dim in proto.tensor_shape.dim)
  if any(size < 0 for size in shape):
    raise status.invalid_argument("tensor parsing error: %s: negative dimension in shape %s" % (
        status.quote(alias), list(shape)))
  return proto.dtype, shape


def to_ndarray(proto, alias="tensor", max_elements=DEFAULT_MAX_ELEMENTS):
  """The numpy array of a TensorProto, of shape and dtype as declared in its header.

  Raises INVALID_ARGUMENT when the data does not match the header (count, field, range) and
  RESOURCE_EXHAUSTED when the shape has more than `max_elements` elements.
  """
  dtype, shape = header(proto, alias)
  kind = _KINDS[dtype]
  count = math.prod(shape)
  if count > max_elements:
    raise status.resource_exhausted("tensor %s of shape %s has %d elements, over the limit of %d" %
                                    (status.quote(alias), list(shape), count, max_elements))
  def error(message):
    return status.invalid_argument("tensor parsing error: %s (%s, shape %s): %s" % (
        status.quote(alias), dtype_name(dtype), list(shape), message))
  stray = [field for field in _VALUE_FIELDS if field != kind.field and len(getattr(proto, field))]
  if stray:
    raise error("values in %s do not match the dtype" % ", ".join(stray))
  values = getattr(proto, kind.field)
  if proto.tensor_content:
    if dtype == types_pb2.DT_STRING:
      raise error("strings cannot be sent in tensor_content")
    if len(values):
      raise error("both tensor_content and %s are set" % kind.field)
    expected = count * kind.numpy_dtype.itemsize
    if len(proto.tensor_content) != expected:
      raise error("tensor_content has %d bytes, the shape needs %d" % (
          len(proto.tensor_content), expected))
    array = np.frombuffer(proto.tensor_content, dtype=kind.numpy_dtype.newbyteorder("<"))
    return array.astype(kind.numpy_dtype).reshape(shape)
  if len(values) not in (count, 1) or (count == 0 and len(values)):
    raise error("%d values in %s, the shape needs %d" % (len(values), kind.field, count))
  if dtype == types_pb2.DT_STRING:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
  elif dtype == types_pb2.DT_HALF:
    array = _checked_cast(values, np.uint16, error).view(np.float16)
  elif kind.field == "int_val" and kind.numpy_dtype != np.int32:
    array = _checked_cast(values, kind.numpy_dtype, error)
  else:
    array = np.array(values, dtype=kind.numpy_dtype)
  if len(values) == 1 and count != 1:
    array = np.full(count, array[0], dtype=kind.numpy_dtype)
  return array.reshape(shape)


def _checked_cast(values, numpy_dtype, error):
  """`values` (int32 field) as `numpy_dtype`, raising `error` when one is out of its range."""
  wide = np.array(values, dtype=np.int64)
  info = np.iinfo(numpy_dtype)
  if wide.size and (wide.min() < info.min or wide.max() > info.max):
    raise error("a value is out of the range of %s" % np.dtype(numpy_dtype).name)
  return wide.astype(numpy_dtype)


def dtype_of(array):
  """The DataType of a numpy array (DT_STRING for bytes, str and object arrays)."""
  array = np.asarray(array)
  if array.dtype.kind in "OSU":
    return types_pb2.DT_STRING
  dtype = _DTYPE_OF_NUMPY.get(array.dtype.newbyteorder("=")) or _DTYPE_OF_NUMPY.get(array.dtype)
  if dtype is None:
    raise status.invalid_argument("no TensorFlow dtype for numpy dtype %s" % array.dtype)
  return dtype


def from_ndarray(array, dtype=None, use_tensor_content=False):
  """A TensorProto holding `array` (cast to `dtype`, a DataType, when given).

  Values go in the dtype's typed field (as TF Serving answers by default), or as raw bytes in
  `tensor_content` when `use_tensor_content` (strings always go in `string_val`).
  """
  array = np.asarray(array)
  dtype = dtype_of(array) if dtype is None else dtype
  kind = _kind(dtype, "output")
  proto = tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
      dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]))
  flat = array.reshape(-1)
  if dtype == types_pb2.DT_STRING:
    proto.string_val.extend(value if isinstance(value, bytes) else str(value).encode("utf-8")
                            for value in flat.tolist())
    return proto
  flat = flat.astype(kind.numpy_dtype)
  if use_tensor_content:
    proto.tensor_content = flat.astype(kind.numpy_dtype.newbyteorder("<")).tobytes()
  elif dtype == types_pb2.DT_HALF:
    proto.half_val.extend(flat.view(np.uint16).tolist())
  else:
    getattr(proto, kind.field).extend(flat.tolist())
  return proto
