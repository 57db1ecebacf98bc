"""TFX-style push: validate an export in a fresh process, optionally only push if not worse.

`trainer.export.export_model` writes each version into a hidden temporary folder and hands it to
`publish`, which

1. validates it in a fresh process (`validate_in_fresh_process`, i.e.
   `python -m trainer.push --validate=DIR`): the SavedModel must load, answer every request of
   `assets.extra/tf_serving_warmup_requests` through its signature, with outputs of the declared
   dtypes and shapes (dimension 0 = the request's batch), finite `scores` and `item_ids` from the
   vocabulary (`assets/vocab.txt`). The one exception is the approximate indexes' padding: an
   entry with item id 0 AND score -inf. A timeout or crash is a failure whose reason is the tail
   of the subprocess's stderr. The process imports `scann` only when `assets.extra/export.json`
   says `"index": "scann"`.
2. with `push_if_better`, compares the candidate's recorded validation metric
   (`validation_metrics[push_metric]` of its `export.json`; the run's valid metrics, in percent)
   with that of the newest existing version: it is published only if not lower (all the
   project's metrics, HR/MRR/recall/NDCG@K, are higher-is-better). A newest version without the
   metric recorded, or no version at all, is no baseline: the candidate is published (with a
   warning in the first case). A candidate without the metric is refused when there is a
   baseline.
3. publishes the version by renaming the folder into place (`trainer.versions`), or deletes it
   and raises `PushRefused`. The decision is logged (absl) with both numbers.
"""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from absl import logging

from trainer import versions

METADATA_FILE = "export.json"  # = trainer.export.METADATA_FILE
METRICS_KEY = "validation_metrics"
RECALL_KEY = "index_recall"  # an approximate index's measured recall (trainer.export)
EXACT_INDEXES = ("brute_force",)
DEFAULT_PUSH_METRIC = "mrr_at_20"
_REPORT_PREFIX = "VALIDATION_REPORT "
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STDERR_TAIL = 3000


@dataclasses.dataclass
class ValidationReport:
  """The outcome of validating one SavedModel folder."""
  ok: bool
  reason: str = ""
  saved_model_dir: str = ""
  requests: int = 0  # warm-up requests replayed
  seconds: float = 0.0

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_dict(cls, content: Dict[str, Any]) -> "ValidationReport":
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in content.items() if k in names})


class PushRefused(ValueError):
  """The candidate version was not published: failed validation, or worse than the newest."""

  def __init__(self, message: str, report: Optional[ValidationReport] = None,
               candidate: Optional[float] = None, baseline: Optional[float] = None):
    super().__init__(message)
    self.report = report
    self.candidate = candidate
    self.baseline = baseline


def read_metadata(saved_model_dir: str) -> Dict[str, Any]:
  """`assets.extra/export.json` of a version ({} if absent or unreadable)."""
  path = os.path.join(saved_model_dir, "assets.extra", METADATA_FILE)
  try:
    with open(path) as stream:
      content = json.load(stream)
    return content if isinstance(content, dict) else {}
  except (OSError, ValueError):
    return {}


def recorded_metric(saved_model_dir: str, metric: str) -> Optional[float]:
  """The validation metric recorded in a version's `export.json`, or None."""
  value = read_metadata(saved_model_dir).get(METRICS_KEY, {}).get(metric)
  return _finite_or_none(value)


def _finite_or_none(value: Any) -> Optional[float]:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value) if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------
# Validation (runs in the fresh process).


def validate_saved_model(saved_model_dir: str) -> ValidationReport:
  """Loads the SavedModel in THIS process and replays its warm-up requests; see the module doc."""
  started = time.monotonic()
  report = ValidationReport(ok=False, saved_model_dir=saved_model_dir)
  try:
    report.requests = _check(saved_model_dir)
    report.ok = True
  except _Invalid as error:
    report.reason = str(error)
  report.seconds = time.monotonic() - started
  return report


class _Invalid(Exception):
  pass


def _check(saved_model_dir: str) -> int:
  """Raises `_Invalid` with the reason; returns the number of warm-up requests replayed."""
  metadata = read_metadata(saved_model_dir)
  if metadata.get("index") == "scann":
    import scann  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import warmup  # pylint: disable=g-import-not-at-top

  if not os.path.isfile(warmup.warmup_path(saved_model_dir)):
    raise _Invalid(f"no warm-up requests ({warmup.EXTRA_ASSETS_DIR}/{warmup.WARMUP_FILE})")
  try:
    loaded = tf.saved_model.load(saved_model_dir)
  except Exception as error:  # pylint: disable=broad-except
    raise _Invalid(f"does not load: {type(error).__name__}: {error}") from error
  vocabulary = _read_vocabulary(saved_model_dir)
  logs = warmup.read_warmup_requests(saved_model_dir)
  if not logs:
    raise _Invalid("the warm-up file holds no requests")
  for number, log in enumerate(logs, start=1):
    if not log.HasField("predict_log"):
      raise _Invalid(f"warm-up record {number} is not a predict_log")
    request = log.predict_log.request
    name = request.model_spec.signature_name or "serving_default"
    where = f"warm-up request {number} ({name})"
    if name not in loaded.signatures:
      raise _Invalid(f"{where}: no signature {name!r} (has {sorted(loaded.signatures)})")
    function = loaded.signatures[name]
    inputs = {alias: tf.constant(tf.make_ndarray(proto))
              for alias, proto in request.inputs.items()}
    expected_inputs = function.structured_input_signature[1]
    if set(inputs) != set(expected_inputs):
      raise _Invalid(f"{where}: inputs {sorted(inputs)} but the signature takes "
                     f"{sorted(expected_inputs)}")
    try:
      outputs = {k: v.numpy() for k, v in function(**inputs).items()}
    except Exception as error:  # pylint: disable=broad-except
      raise _Invalid(f"{where} failed: {type(error).__name__}: {error}") from error
    batch = next(iter(inputs.values())).shape[0]
    _check_outputs(where, outputs, function.structured_outputs, batch, vocabulary, np)
  return len(logs)


def _read_vocabulary(saved_model_dir: str):
  """The raw ids of `assets/vocab.txt` as a set of str (line 0, the padding token, excluded)."""
  path = os.path.join(saved_model_dir, "assets", "vocab.txt")
  if not os.path.isfile(path):
    return None
  with open(path) as stream:
    return set(stream.read().split("\n")[1:]) - {""}


def _as_text(ids, np):
  """Item ids (int64, or bytes for string ids) as str, and the padding mask (0 or b"")."""
  if ids.dtype.kind in "iu":
    return ids.astype(str), ids == 0
  text = np.vectorize(lambda value: value.decode("utf-8", "replace"), otypes=[object])(ids)
  return text, text == ""


def _check_outputs(where, outputs, specs, batch, vocabulary, np) -> None:
  if set(outputs) != set(specs):
    raise _Invalid(f"{where}: outputs {sorted(outputs)}, declared {sorted(specs)}")
  for alias, value in outputs.items():
    spec = specs[alias]
    if value.dtype != spec.dtype.as_numpy_dtype:
      raise _Invalid(f"{where}: output {alias!r} is {value.dtype}, declared {spec.dtype.name}")
    if not spec.shape.is_compatible_with(value.shape):
      raise _Invalid(f"{where}: output {alias!r} has shape {list(value.shape)}, declared "
                     f"{spec.shape}")
    if value.ndim == 0 or value.shape[0] != batch:
      raise _Invalid(f"{where}: output {alias!r} has shape {list(value.shape)}, expected "
                     f"batch {batch} in dimension 0")
  scores, item_ids = outputs.get("scores"), outputs.get("item_ids")
  padding = None
  if item_ids is not None:
    if scores is not None and scores.shape != item_ids.shape:
      raise _Invalid(f"{where}: scores {list(scores.shape)} and item_ids "
                     f"{list(item_ids.shape)} differ in shape")
    text, padding = _as_text(item_ids, np)
    if scores is not None:
      bad_padding = padding & ~np.isneginf(scores)
      if bad_padding.any():
        raise _Invalid(f"{where}: the padding item id with a finite score "
                       f"({int(bad_padding.sum())} entries)")
    if vocabulary is None:
      raise _Invalid(f"{where}: returns item ids but the export has no assets/vocab.txt")
    unknown = sorted(set(text[~padding].flat) - vocabulary)
    if unknown:
      raise _Invalid(f"{where}: {len(unknown)} returned item ids are not in the vocabulary, "
                     f"e.g. {unknown[:5]}")
  if scores is not None:
    bad = ~np.isfinite(scores)
    if padding is not None:
      bad &= ~(padding & np.isneginf(scores))
    if bad.any():
      raise _Invalid(f"{where}: {int(bad.sum())} non-finite scores for returned items "
                     f"(e.g. {scores[bad][:3].tolist()})")
  for alias, value in outputs.items():
    if alias != "scores" and value.dtype.kind == "f" and not np.isfinite(value).all():
      raise _Invalid(f"{where}: output {alias!r} has non-finite values")


def validate_in_fresh_process(saved_model_dir: str,
                              timeout_seconds: float = 600.0) -> ValidationReport:
  """Runs `python -m trainer.push --validate=DIR` and returns its report.

  A timeout, a crash or a missing report is a failed report whose reason ends with the tail of
  the subprocess's stderr.
  """
  started = time.monotonic()
  env = dict(os.environ)
  env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  command = [sys.executable, "-m", "trainer.push", f"--validate={os.path.abspath(saved_model_dir)}"]
  try:
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=_ROOT,
                            timeout=timeout_seconds)
  except subprocess.TimeoutExpired as error:
    stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else (
        error.stderr or "")
    return ValidationReport(
        ok=False, saved_model_dir=saved_model_dir, seconds=time.monotonic() - started,
        reason=f"validation timed out after {timeout_seconds:g}s; stderr tail:\n"
               f"{stderr[-_STDERR_TAIL:]}")
  report = None
  for line in reversed(result.stdout.splitlines()):
    if line.startswith(_REPORT_PREFIX):
      try:
        report = ValidationReport.from_dict(json.loads(line[len(_REPORT_PREFIX):]))
      except (ValueError, TypeError):
        report = None
      break
  if report is None or (result.returncode != 0 and report.ok):
    return ValidationReport(
        ok=False, saved_model_dir=saved_model_dir, seconds=time.monotonic() - started,
        reason=f"the validation process exited with {result.returncode} without a report; "
               f"stderr tail:\n{result.stderr[-_STDERR_TAIL:]}")
  report.saved_model_dir = saved_model_dir
  report.seconds = time.monotonic() - started
  return report


# ------------------------------------------------------------------------------------------------
# Publishing.


def publish(temporary: str, model_dir: str, version: Optional[int] = None, *,
            validate: bool = True, push_if_better: bool = False,
            push_metric: str = DEFAULT_PUSH_METRIC,
            min_recall: Optional[float] = None,
            validation_timeout_seconds: float = 600.0) -> str:
  """Validates and compares the finished `temporary` version folder, then renames it into place.

  With `push_if_better`, a version of an approximate index must also have a recorded recall
  (export.json's `index_recall`) of at least `min_recall` (default: the `min_recall` recorded
  with it) at every k measured.

  Returns the version path. On refusal, deletes `temporary` and raises `PushRefused` (a failed
  validation, a recall below the target or a worse metric); the decision is logged either way.
  """
  try:
    if validate:
      report = validate_in_fresh_process(temporary, validation_timeout_seconds)
      if not report.ok:
        logging.error("Push refused: the candidate export failed validation in a fresh process: "
                      "%s", report.reason)
        raise PushRefused(f"the candidate export failed validation: {report.reason}",
                          report=report)
      logging.info("Candidate export validated in a fresh process (%d warm-up requests, %.1fs)",
                   report.requests, report.seconds)
    if push_if_better:
      _check_recall(temporary, min_recall)
      _compare(temporary, model_dir, push_metric)
    return versions.publish_version(temporary, model_dir, version)
  finally:
    if os.path.exists(temporary):
      shutil.rmtree(temporary, ignore_errors=True)


def recorded_recall(saved_model_dir: str) -> Optional[Dict[str, Any]]:
  """The `index_recall` record of a version's export.json, if any."""
  return read_metadata(saved_model_dir).get(RECALL_KEY)


def _check_recall(temporary: str, min_recall: Optional[float]) -> None:
  """Raises `PushRefused` if the candidate is an approximate index whose recorded recall is
  missing or below `min_recall` (default: its recorded target)."""
  metadata = read_metadata(temporary)
  if metadata.get("index", "brute_force") in EXACT_INDEXES:
    return
  record = metadata.get(RECALL_KEY)
  if not record or not record.get("recall"):
    message = (f"push refused: the candidate's {metadata.get('index')} index has no recorded "
               "recall (export it with trainer.export, which measures it)")
    logging.error("%s", message)
    raise PushRefused(message)
  target = record.get("min_recall", 0.0) if min_recall is None else min_recall
  worst_key, worst = min(record["recall"].items(), key=lambda item: item[1])
  if worst < target:
    message = (f"push refused: the candidate's {metadata.get('index')} index has "
               f"recall{worst_key.replace('at_', '@')} = {worst:g} below the target {target:g}")
    logging.warning("%s", message)
    raise PushRefused(message)
  logging.info("Push: the candidate's recall%s = %g reaches the target %g",
               worst_key.replace("at_", "@"), worst, target)


def _compare(temporary: str, model_dir: str, metric: str) -> None:
  """Raises `PushRefused` if the candidate's `metric` is below the newest version's."""
  candidate = recorded_metric(temporary, metric)
  numbers = versions.existing_versions(model_dir)
  if not numbers:
    logging.info("Push: candidate valid %s = %s; no existing version in %s: publishing",
                 metric, _show(candidate), model_dir)
    return
  newest = os.path.join(model_dir, str(numbers[-1]))
  baseline = recorded_metric(newest, metric)
  if baseline is None:
    logging.warning("Push: candidate valid %s = %s; the newest version %s has no recorded %s: "
                    "no baseline, publishing", metric, _show(candidate), newest, metric)
    return
  if candidate is None:
    message = (f"push refused: the candidate has no recorded validation {metric} (pass the "
               f"run's metrics), newest version {numbers[-1]} has {metric} = {baseline:g}")
    logging.error("%s", message)
    raise PushRefused(message, baseline=baseline)
  if candidate < baseline:
    message = (f"push refused: candidate valid {metric} = {candidate:g} is worse than "
               f"{baseline:g} of the newest version {numbers[-1]} ({newest})")
    logging.warning("%s", message)
    raise PushRefused(message, candidate=candidate, baseline=baseline)
  logging.info("Push: candidate valid %s = %g >= %g of the newest version %d: publishing",
               metric, candidate, baseline, numbers[-1])


def _show(value: Optional[float]) -> str:
  return "unknown" if value is None else f"{value:g}"


def numeric_metrics(metrics: Optional[Dict[str, Any]]) -> Dict[str, float]:
  """The finite numeric entries of a metrics dict (as recorded in `export.json`)."""
  return {k: float(v) for k, v in (metrics or {}).items() if _finite_or_none(v) is not None}


def main(argv: List[str]) -> int:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  directory = flags.FLAGS.validate
  if not directory:
    print("error: pass --validate=SAVED_MODEL_DIR", file=sys.stderr)
    return 2
  report = validate_saved_model(directory)
  print(_REPORT_PREFIX + report.to_json(), flush=True)
  return 0 if report.ok else 1


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("validate", None, "A SavedModel folder to validate in this process; "
                      "prints a JSON report line.")
  app.run(main)
