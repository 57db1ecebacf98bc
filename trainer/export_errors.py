"""The error of an export that cannot be done as asked (`trainer.export`, `trainer.versions`)."""


class ExportError(ValueError):
  """The model or dataset cannot be exported as asked; the message says why."""
