"""The error of an export that cannot be done as asked (`trainer.export`, `trainer.versions`)."""


class ExportError(ValueError):
  """The model or dataset cannot be exported as asked; the message says why."""


class RecallTargetMissed(ExportError):
  """No search setting of an approximate index reaches the recall target; nothing published.

  `tuning` is the `tfrs_attenmixer.index_tuning.Tuning` with what was measured.
  """

  def __init__(self, message: str, tuning):
    super().__init__(message)
    self.tuning = tuning
