"""Errors the lab reports to its users as one line and a non-zero exit code."""

from __future__ import annotations


class LabError(Exception):
    """Base class of every error the CLI reports without a traceback."""


class InputError(LabError, ValueError):
    """A command's input is unusable (arguments, files, folders); the message says the fix."""


class ConfigError(InputError):
    """An experiment config is invalid; the message names the file, the key and the fix."""


class JobError(LabError, RuntimeError):
    """A job started but failed; the message names the party or stage and the cause."""


class JobRefusedError(InputError):
    """A party's node refused the job under its own policy (nothing of its data was used)."""


class JobInterruptedError(JobError):
    """A job was stopped on request (Ctrl-C) before it finished."""
