"""The exception tree: every expected failure is a HarnessError with a message and a hint.

UserError: the user's input is wrong (bad patch, dropped kconfig option, unknown target).
InfraError: the machine or a tool failed (missing tool, no KVM, VM never came up).
The CLI catches HarnessError once, prints message + hint, and exits 4 (user) or 3 (infra).
"""

from __future__ import annotations


class HarnessError(Exception):
    """Root of all harness errors."""

    exit_code = 3

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UserError(HarnessError):
    """Bad input from the user: fix the command, the config or the patches."""

    exit_code = 4


class InfraError(HarnessError):
    """The machine, a tool or the VM failed; the input may be fine."""

    exit_code = 3


class ConfigError(UserError):
    """A YAML file or option has an unknown key or a bad value."""


class UnknownTarget(UserError):
    """A target name that has no YAML file."""


class SourceError(UserError):
    """A kernel source that cannot be found or read."""


class SeriesError(UserError):
    """A patch series that cannot be fetched or applied."""


class KconfigError(UserError):
    """A requested kernel config option did not survive olddefconfig."""


class BuildError(UserError):
    """The kernel failed to compile (the failing file is named in the message)."""


class MissingTool(InfraError):
    """A required program is not installed."""


class DownloadError(InfraError):
    """A package or source could not be downloaded."""


class VmError(InfraError):
    """The VM did not come up or could not be reached."""
