"""Errors of the deployment runtime: one class per meaning, each message names the fix."""

from __future__ import annotations

from lab.errors import InputError, JobError


class DeploymentError(InputError):
    """A deployment folder or request is unusable (missing, stale, wrong experiment)."""


class StartupError(JobError):
    """A deployment process did not start or did not connect; everything started was stopped."""


class DeployedJobError(JobError):
    """The deployment engine could not run a job to its end (timeout, stopped run)."""
