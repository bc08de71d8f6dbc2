"""Errors a user can cause. Plain exceptions: only the app (`smile_synth.app`) turns them into one
`Error:` line and exit code 2, so no library layer depends on click."""
from __future__ import annotations


class UserError(Exception):
    """A bad argument, file or environment: the message names the bad value and the fix."""

    exit_code = 2

    def one_line(self) -> str:
        return " ".join(str(self).split())
