"""User-facing errors.

A `UserError` carries one line that names the file or parameter at fault and the fix.
Stage scripts print it without a traceback (see `linkstyle.cli.run_stage`).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a parameter, a file, a checkpoint."""
