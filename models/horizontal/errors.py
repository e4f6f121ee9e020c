"""Errors of the horizontal (same features, different enterprises) training library.

Each class names one meaning; every message names the offending value and says how to fix it.
Privacy errors subclass :class:`models.privacy.PrivacyError` so the governance layer can catch
all of them in one place.
"""

from __future__ import annotations

from models.privacy import PrivacyError


class SchemaError(ValueError):
    """A feature schema is malformed (unknown kind, duplicate column, non-positive scale ...)."""


class SchemaMismatchError(ValueError):
    """A bank's table does not match the shared schema (missing column, wrong kind)."""


class ModelSpecError(ValueError):
    """A model cannot be built from the given kind, input width or hidden sizes."""


class ParameterMismatchError(ValueError):
    """Parameter arrays do not fit the model (wrong count, shape or non-finite values)."""


class TrainingConfigError(ValueError):
    """A local training setting is out of range or inconsistent with the call."""


class TrainingDataError(ValueError):
    """Features or labels cannot be trained on (shape, dtype, non-finite values, one class)."""


class DPConfigError(PrivacyError):
    """A differential-privacy setting is out of range or inconsistent with the job."""


class SecureRNGUnavailableError(DPConfigError):
    """``secure_rng=True`` was asked for but no cryptographically secure generator is installed."""


class PrivacyBudgetTooSmallError(DPConfigError):
    """No noise multiplier (up to Opacus's maximum) meets the target (ε, δ) for the job."""


class DPPlanMismatchError(DPConfigError):
    """The data or settings of a round differ from what the privacy plan was made for."""


class PrivacyBudgetExhaustedError(DPConfigError):
    """Another round would take more DP-SGD steps than the plan, and so exceed the target ε."""
