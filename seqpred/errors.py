"""Errors that seqpred reports to its user as one line, with the exit code the CLI uses."""

from __future__ import annotations


class SeqpredError(Exception):
    """A problem the user can fix: reported as one line on stderr, exit code 1."""

    exit_code = 1


class UsageError(SeqpredError):
    """A bad option value or combination: exit code 2, as for any command-line usage error."""

    exit_code = 2


class CorpusError(SeqpredError):
    """The corpus cannot be read or is unusable for training."""


class RunError(SeqpredError):
    """A run folder is missing, incomplete, corrupt or from an unknown format version."""


class BackendError(SeqpredError):
    """A backend is unknown, failed to load, or does not honour the contract."""


class VocabError(SeqpredError):
    """Text holds symbols that the vocabulary does not know."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or "" when it has none: one line for the user."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
