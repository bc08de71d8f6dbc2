"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""
from __future__ import annotations

import click


class UserError(click.ClickException):
    """A bad argument, file or environment: the message names the bad value and the fix."""

    exit_code = 2

    def format_message(self) -> str:  # keep it to one line
        return " ".join(str(self.message).split())
