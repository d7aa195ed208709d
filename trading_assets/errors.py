"""Errors about input data that name the file, the line and the reason."""

from __future__ import annotations

from dataclasses import dataclass

_SHOWN = 20


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        where = f", line {self.line}" if self.line else ""
        return f"{self.file}{where}: {self.reason}"


class InputError(ValueError):
    """One or more input rows cannot be accepted; nothing of the batch was written."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        if len(self.problems) == 1:
            super().__init__(str(self.problems[0]))
            return
        shown = "\n".join(f"  {p}" for p in self.problems[:_SHOWN])
        more = len(self.problems) - _SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} input problems:\n{shown}{tail}")


def input_error(file: object, reason: str, line: int = 0) -> InputError:
    """The error of one problem of `file` (a path or a name)."""
    return InputError([Problem(str(file), line, reason)])


def raise_if_any(problems: list[Problem]) -> None:
    if problems:
        raise InputError(problems)


class QueueNotServed(RuntimeError):
    """The daemon stopped while a run waited in its queue; the run was canceled."""
