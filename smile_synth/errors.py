"""Errors a user can cause. Plain exceptions: only the app (`smile_synth.app`) turns them into one
`Error:` line and exit code 2, so no library layer depends on click.

Text read from files (labels, tensor names, metadata) is untrusted: `printable` shows it with control
characters escaped and cut to a length, so a downloaded file cannot move the cursor, retitle the terminal
or flood it through a message. `one_line` applies the escaping to every message as a last line of defence.
"""
from __future__ import annotations

TEXT_CHARS = 80           # file-derived text in a message: at most this many characters
MESSAGE_CHARS = 2000      # a whole message: at most this many characters
REASON_CHARS = 120        # an error's own text quoted in a warning: at most this many characters


def _escaped(ch: str) -> str:
    """One character as Python writes it in a literal: printable ones as they are, others as \\xNN, \\uNNNN."""
    return ch if ch.isprintable() or ch == " " else repr(ch)[1:-1]


def printable(text: object, limit: int = TEXT_CHARS) -> str:
    """str(text) with every non-printable character (ESC, BEL, backspace, newlines, bidi overrides, ...)
    escaped as \\x1b, \\u202e, ..., and cut to `limit` characters plus a note of the full length."""
    text = str(text)
    head = "".join(map(_escaped, text[:limit]))
    return head if len(text) <= limit else f"{head}... ({len(text)} characters)"


def shown(value: object, limit: int = TEXT_CHARS) -> str:
    """repr(value) (strings quoted, escapes visible) cut to `limit` characters: a value from a file in a message."""
    return printable(repr(value), limit)


def one_line(message: object, limit: int = MESSAGE_CHARS) -> str:
    """`message` as one line: whitespace runs become one space, control characters are escaped, and it is
    cut to `limit` characters."""
    return printable(" ".join(str(message).split()), limit)


class UserError(Exception):
    """A bad argument, file or environment: the message names the bad value and the fix."""

    exit_code = 2

    def one_line(self) -> str:
        return one_line(self)
