"""`ServingError`: a failed request as TF Serving reports it, a gRPC status code and a message.

Every layer of the server (tensor decoding, signature checks, model resolution, the TensorFlow
runtime) raises `ServingError`; the gRPC and REST front ends turn it into a gRPC status or an HTTP
status with an `{"error": ...}` body. TensorFlow's own errors carry the same canonical codes
(`tf.errors.InvalidArgumentError.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]`), so
`from_exception` keeps the code the runtime chose.
"""

import re

import grpc

_CODES = {code.value[0]: code for code in grpc.StatusCode}

# TF Serving's REST API maps canonical codes to HTTP statuses this way (http_rest_api_util).
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# A failed `tf.debugging.assert_*` of a served function: its message, then the checked value last.
_ASSERTION = re.compile(r"assertion failed: \[(?P<message>[^\]]*)\].*\[(?P<value>[^\]]*)\]\s*$",
                        re.MULTILINE)

# Longest user-supplied text (a model name, an alias) quoted back in an error message.
_MAX_QUOTED = 80
# Longest message sent back to a client.
_MAX_MESSAGE = 4000


def quote(text):
  """`text` (from a request) shortened and quoted, safe to put in a log line or error message."""
  text = str(text)
  if len(text) > _MAX_QUOTED:
    text = text[:_MAX_QUOTED] + "..."
  return repr(text)


class ServingError(Exception):
  """A failed request: `code` (a `grpc.StatusCode`) and a message for the client."""

  def __init__(self, code, message):
    message = str(message)
    if len(message) > _MAX_MESSAGE:
      message = message[:_MAX_MESSAGE] + "..."
    super().__init__(message)
    self.code = code
    self.message = message

  @property
  def http_status(self):
    """The HTTP status TF Serving's REST API returns for this code (500 for the others)."""
    return _HTTP_STATUS.get(self.code, 500)

  def __repr__(self):
    return "ServingError(%s, %r)" % (self.code.name, self.message)

  @classmethod
  def from_exception(cls, error, context=""):
    """Wraps `error`: a TensorFlow `OpError` keeps its canonical code, others become INTERNAL.

    A failed assertion of the served function (e.g. `k must be >= 1`) becomes its own sentence
    and the value it rejected, without TensorFlow's graph-execution text.
    """
    if isinstance(error, cls):
      return error
    code = _CODES.get(getattr(error, "error_code", None), grpc.StatusCode.INTERNAL)
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    assertion = _ASSERTION.search(message.split("\n\t")[0]) or _ASSERTION.search(message)
    if assertion:
      message = "%s; got %s" % (assertion.group("message").strip().rstrip("."),
                                assertion.group("value").strip())
    return cls(code, context + message if context else message)


def invalid_argument(message):
  return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message):
  return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message):
  return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def resource_exhausted(message):
  return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unimplemented(message):
  return ServingError(grpc.StatusCode.UNIMPLEMENTED, message)
