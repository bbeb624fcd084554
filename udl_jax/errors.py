"""The exception types users see: bad input, missing data, config mistakes, and a training that diverged.

Launchers catch `UserError` and print its message without a traceback; anything else is a bug.
"""


class UserError(Exception):
  """An error the user can fix; the message says what happened and what to do."""


class Diverged(UserError):
  """A training's loss became non-finite at step `at` (an epoch or an iteration). The benchmark records a
  clustering trial that diverged as failed and goes on; anywhere else it stops the run like any `UserError`."""

  def __init__(self, message: str, at: int):
    super().__init__(message)
    self.at = at
