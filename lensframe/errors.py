"""User-facing errors.

A `SpecIssue` is one mistake in a user's spec or its inputs; a `SpecError` carries all issues of a
file so they are reported at once. Code below the spec layer (datasets, model sources, capability
checks) raises `SpecError` with `path` set to the spec key it blames (e.g. ("dataset", "label"));
the spec layer fills in file, line and column from that path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass
class SpecIssue:
    message: str
    path: tuple = ()
    hint: Optional[str] = None
    file: Optional[str] = None
    line: Optional[int] = None  # 1-based
    column: Optional[int] = None  # 1-based

    def format(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        dotted = ".".join(str(p) for p in self.path)
        text = f"{where}: {dotted + ': ' if dotted else ''}{self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class LensframeError(Exception):
    """Base for errors meant for the user (printed without a traceback, exit code 2)."""


class SpecError(LensframeError):
    def __init__(self, issues: Sequence[SpecIssue] | SpecIssue | str, path: tuple = (), hint: str | None = None):
        if isinstance(issues, str):
            issues = [SpecIssue(issues, tuple(path), hint)]
        elif isinstance(issues, SpecIssue):
            issues = [issues]
        # like a compiler: in the order of the file (stable; issues without a line go last)
        self.issues: list[SpecIssue] = sorted(
            issues, key=lambda i: (i.line is None, i.line or 0, i.column or 0))
        super().__init__(self.format())

    def format(self) -> str:
        return "\n".join(i.format() for i in self.issues)


def closest(name, choices) -> Optional[str]:
    """The known name closest to `name`, or None when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name, choices) -> Optional[str]:
    """"did you mean 'x'?" for the closest known name, or None when nothing is close."""
    close = closest(name, choices)
    return f"did you mean {close!r}?" if close else None
