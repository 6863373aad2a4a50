"""Configuration errors: every problem of a file at once, each with its YAML path and line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem: ``path`` like ``nodeClasses[2].ladder[0].timeout`` ("" for the whole file)."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path or "(top level)"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used. ``render()`` gives the text an operator should see."""

    def __init__(self, errors: Sequence[ConfigIssue], source: str = "<string>", *, file_level: bool = False):
        self.errors: list[ConfigIssue] = list(errors)
        self.source = source
        # A file that cannot be read or parsed has one message and no schema paths: render it as a
        # single line, without the count line.
        self.file_level = file_level
        super().__init__(self.render())

    @classmethod
    def file_problem(cls, source: str, message: str) -> ConfigError:
        return cls([ConfigIssue("", None, message)], source, file_level=True)

    def render(self) -> str:
        if self.file_level:
            return f"{self.source}: {self.errors[0].message}"
        count = len(self.errors)
        noun = "error" if count == 1 else "errors"
        lines = [str(issue) for issue in self.errors]
        lines.append(f"{count} {noun} in {self.source}")
        return "\n".join(lines)
