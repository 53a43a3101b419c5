"""Exceptions that carry a message meant for the user.

Every error that a user can cause (a bad flag, a malformed file, a model
that does not fit in memory) is raised as a subclass of
:class:`SparseMLPError`.  The command line catches that base class, prints
the message (which names the problem and the fix) and exits with status 2,
so users never see a traceback from deep inside the library for their own
mistakes.
"""


class SparseMLPError(Exception):
    """Base class of every error whose message is written for the user."""

    exit_code = 2


class ConfigError(SparseMLPError, ValueError):
    """An impossible or contradictory setting."""


class DatasetError(SparseMLPError):
    """A dataset that is missing, malformed or unusable."""


class MemoryBudgetError(SparseMLPError, MemoryError):
    """A model or batch that would not fit in the memory available."""


class CheckpointError(SparseMLPError):
    """A checkpoint that is missing, corrupt, foreign or of another version."""


class CheckpointBusyError(CheckpointError):
    """A checkpoint (or topology log) that another process has open: HDF5's
    file lock is held.  The file is not damaged; it must not be skipped,
    renamed aside or replaced by an older one."""


class DivergenceError(SparseMLPError, FloatingPointError):
    """Training produced NaN or inf values."""

    exit_code = 3
