"""Server-side batching (serving/batching.py): merging in process, exact answers from a real server."""

import concurrent.futures
import threading

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from serving import batching
from serving import tensors
from serving import testing


class BlockingSignature:
  """A stand-in signature: doubles `sessions`, sums `candidates`; its first call blocks until
  released, so that later requests queue behind it; records the batch size of each call."""

  def __init__(self):
    self.release = threading.Event()
    self.calls = []
    self._first = True

  def __call__(self, arrays, keys):
    if self._first:
      self._first = False
      self.release.wait(30)
    self.calls.append({alias: array.shape for alias, array in arrays.items()})
    sessions = arrays["sessions"]
    if (sessions < 0).any():
      raise ValueError("negative id")
    outputs = {"doubled": 2 * sessions, "total": sessions.sum(axis=1)}
    if "candidates" in arrays:
      outputs["total"] = outputs["total"] + arrays["candidates"].sum(axis=1)
    return {key: outputs[key] for key in keys}


def _wait_for(condition):
  for _ in range(3000):
    if condition():
      return
    threading.Event().wait(0.01)
  raise AssertionError("timed out")


def _submit_while_blocked(batcher, signature, requests):
  """Runs the first request (whose call blocks), queues the rest behind it, then releases it.
  Returns each request's answer, or the exception it raised."""
  # pylint: disable=protected-access
  with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
    futures = [pool.submit(batcher.run, *requests[0])]
    _wait_for(lambda: batcher._running == 1 and not batcher._pending)
    futures += [pool.submit(batcher.run, *request) for request in requests[1:]]
    _wait_for(lambda: len(batcher._pending) == len(requests) - 1)
    signature.release.set()
    return [future.exception() or future.result() for future in futures]


def _sessions(*rows):
  return {"sessions": np.array(rows, np.int64)}


def test_queued_requests_are_merged_padded_and_split_back():
  signature = BlockingSignature()
  batcher = batching.Batcher(signature, batching.BatchingOptions(max_batch_size=8))
  requests = [(_sessions([1, 2]), ["doubled", "total"]),
              (_sessions([3, 4, 5]), ["total"]),
              (_sessions([6], [7]), ["doubled"]),
              (_sessions([8, 9, 10, 11]), ["doubled", "total"])]
  answers = _submit_while_blocked(batcher, signature, requests)
  # The first call ran alone; the three queued behind it were one call of 4 rows, padded to 4.
  assert signature.calls == [{"sessions": (1, 2)}, {"sessions": (4, 4)}]
  for (arrays, keys), answer in zip(requests, answers):
    assert sorted(answer) == sorted(keys)
    width = arrays["sessions"].shape[1]
    if "total" in keys:
      np.testing.assert_array_equal(answer["total"], arrays["sessions"].sum(axis=1))
    if "doubled" in keys:  # padded columns are the merged call's zeros
      np.testing.assert_array_equal(answer["doubled"][:, :width], 2 * arrays["sessions"])
      assert not answer["doubled"][:, width:].any()


def test_batches_respect_max_batch_size_and_keep_groups_apart():
  signature = BlockingSignature()
  batcher = batching.Batcher(signature, batching.BatchingOptions(max_batch_size=3))
  candidates = lambda width: np.ones([1, width], np.int64)
  requests = [(_sessions([1]), ["total"]),
              (_sessions([2], [3]), ["total"]),
              ({**_sessions([4]), "candidates": candidates(2)}, ["total"]),
              (_sessions([5]), ["total"]),
              (_sessions([6]), ["total"]),  # over max_batch_size with the two before
              ({**_sessions([7]), "candidates": candidates(3)}, ["total"]),  # unpadded width
              ({**_sessions([8]), "candidates": candidates(2)}, ["total"])]
  answers = _submit_while_blocked(batcher, signature, requests)
  assert [call["sessions"][0] for call in signature.calls] == [1, 3, 2, 1, 1]
  assert signature.calls[2]["candidates"] == (2, 2)
  expected = [[1], [2, 3], [6], [5], [6], [10], [10]]
  assert [answer["total"].tolist() for answer in answers] == expected


def test_a_full_batch_runs_at_once_outside_the_queue():
  signature = BlockingSignature()
  signature.release.set()
  batcher = batching.Batcher(signature, batching.BatchingOptions(max_batch_size=2))
  batcher._running = 1  # pylint: disable=protected-access  (as if a merged call were running)
  answer = batcher.run(_sessions([1], [2]), ["total"])
  assert answer["total"].tolist() == [1, 2] and signature.calls == [{"sessions": (2, 1)}]


def test_a_failing_request_fails_alone():
  signature = BlockingSignature()
  batcher = batching.Batcher(signature, batching.BatchingOptions())
  requests = [(_sessions([1]), ["total"]), (_sessions([2]), ["total"]),
              (_sessions([-3]), ["total"]), (_sessions([4]), ["total"])]
  answers = _submit_while_blocked(batcher, signature, requests)
  assert isinstance(answers[2], ValueError)
  assert [answers[i]["total"].tolist() for i in (0, 1, 3)] == [[1], [2], [4]]


def test_options_are_checked():
  with pytest.raises(ValueError, match="max_batch_size"):
    batching.BatchingOptions(max_batch_size=0)


def test_server_with_batching_answers_concurrent_clients_exactly(tmp_path):
  """A real server on 127.0.0.1 with --enable_batching: 16 clients sending sessions of different
  lengths at once get exactly the unbatched answers (the toy model's integer arithmetic)."""
  base_path = str(tmp_path / "models" / "toy")
  testing.write_toy_version(base_path, 1)
  process = testing.ServerProcess(str(tmp_path), "--model_base_path=%s" % base_path,
                                  "--model_name=toy", "--enable_batching",
                                  "--batching_max_batch_size=16", "--grpc_max_threads=32",
                                  rest=False)
  rng = np.random.default_rng(0)
  sessions = [rng.integers(0, testing.NUM_ITEMS + 3, size=(1 + i % 3, 1 + i % 7))
              for i in range(160)]
  try:
    with grpc.insecure_channel(process.address) as channel:
      process.wait_until_available("toy", channel)
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

      def ask(session):
        response = stub.Predict(testing.predict_request("toy", session), timeout=60)
        return {alias: tensors.to_ndarray(proto) for alias, proto in response.outputs.items()}

      with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, sessions))
  finally:
    assert process.stop() == 0, process.log()
  for session, answer in zip(sessions, answers):
    expected = testing.toy_reference(1, session)
    for alias, array in expected.items():
      np.testing.assert_array_equal(answer[alias], array, err_msg=alias)
  assert "Batching serving_default: first merged call" in process.log()
