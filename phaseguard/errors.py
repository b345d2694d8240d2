"""Errors that reach the user as one line.

Everything a user can get wrong (a missing file, a wrong shape, an unknown name, a corrupt
checkpoint, a diverging loss) raises a subclass of :class:`PhaseguardError` with a message that
names the problem. The CLI prints that message on one line and exits with status 2; Python
callers can catch the class they care about.
"""

from __future__ import annotations

import signal


class PhaseguardError(Exception):
    """Base class of every error phaseguard reports to the user."""


class DataError(PhaseguardError):
    """A dataset is missing, truncated, malformed or inconsistent."""


class ConfigError(PhaseguardError):
    """A configuration key or value is unknown or invalid."""


class ModelError(PhaseguardError):
    """An unknown model name or an invalid model argument."""


class CheckpointError(PhaseguardError):
    """A checkpoint is missing, truncated, foreign or unsafe."""


class TrainingError(PhaseguardError):
    """Training cannot continue (for example the loss became NaN)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a command. The message says what is intact and how to go on;
    ``signum`` is the signal (the CLI exits with 128 + signum, as a shell reports it)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @classmethod
    def of(cls, exc: KeyboardInterrupt, what: str, then: str) -> Interrupted:
        """``{what}stopped by SIGNAL{then}`` for the signal behind ``exc`` (its ``signum``;
        SIGINT for a plain KeyboardInterrupt)."""
        signum = getattr(exc, "signum", signal.SIGINT)
        return cls(f"{what}stopped by {signal.Signals(signum).name}{then}", signum)
