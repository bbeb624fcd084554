"""The one exception type users see: bad input, missing data, config mistakes.

Launchers catch `UserError` and print its message without a traceback; anything else is a bug.
"""


class UserError(Exception):
  """An error the user can fix; the message says what happened and what to do."""
