"""Errors of the scoring service: one class per meaning, each with its HTTP status.

A refusal of the platform's scoring endpoint is an answer, not a crash: every class carries the
HTTP status and a stable machine-readable ``code`` the endpoint returns as JSON
(``{"error": code, "detail": message, ...}``), and the message names the value and the fix.
All are :class:`lab.errors.InputError` subclasses, so the ``lab`` CLI reports them as one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from lab.errors import InputError


class ServingError(InputError):
    """Base class: a request or a serving setup was refused."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.extra = dict(extra or {})

    @property
    def audit_outcome(self) -> str:
        """What the platform's audit log records (the code, unless the truth must not leave)."""
        return self.code

    def body(self) -> dict[str, Any]:
        """The JSON error body the endpoint returns."""
        return {"error": self.code, "detail": str(self), **self.extra}


class ServingSetupError(ServingError):
    """The endpoint cannot start: missing model store, data, feature set or token file."""

    status = 500
    code = "setup_error"


class AuthenticationError(ServingError):
    """No credential, or one no bank holds (HTTP 401)."""

    status = 401
    code = "unauthenticated"


class RateLimitedError(ServingError):
    """The bank's token bucket is empty (HTTP 429); ``retry_after`` seconds until a token."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, extra={"retry_after_s": round(retry_after, 3)})
        self.retry_after = retry_after


class RequestFormatError(ServingError):
    """The request body is not a valid scoring request (HTTP 422)."""

    status = 422
    code = "invalid_request"


class UnknownModelError(ServingError):
    """The platform holds no part with the requested model id (HTTP 404)."""

    status = 404
    code = "unknown_model"


class ForeignModelError(UnknownModelError):
    """The part exists but was trained with another bank (or is bound to none).

    The caller gets exactly the answer of an unknown model (404 ``unknown_model``), so a bank
    cannot probe which model ids other banks have; the audit log records the truth.
    """

    def __init__(self, message: str, *, outcome: str) -> None:
        super().__init__(message)
        self._outcome = outcome

    @property
    def audit_outcome(self) -> str:
        """``foreign_model`` or ``unbound_model``."""
        return self._outcome


class ModelHashMismatchError(ServingError):
    """The bank's reference pins another version of the platform part (HTTP 409)."""

    status = 409
    code = "model_hash_mismatch"


class UnknownSplitError(ServingError):
    """A requested split id or tree is not in the platform's part (HTTP 422)."""

    status = 422
    code = "unknown_split"


class PurposeRefusedError(ServingError):
    """The bank's credential or the published feature set does not allow the purpose (403)."""

    status = 403
    code = "purpose_not_allowed"


class NotAuthorizedError(ServingError):
    """Enterprises without a valid authorization of this bank for this purpose (HTTP 403)."""

    status = 403
    code = "not_authorized"

    def __init__(self, message: str, *, enterprise_ids: Sequence[str]) -> None:
        super().__init__(message, extra={"enterprise_ids": list(enterprise_ids)})
        self.enterprise_ids = tuple(enterprise_ids)


class UnknownEnterpriseError(ServingError):
    """Authorized enterprises the platform holds no row for (HTTP 404, never a default)."""

    status = 404
    code = "unknown_enterprise"

    def __init__(self, message: str, *, enterprise_ids: Sequence[str]) -> None:
        super().__init__(message, extra={"enterprise_ids": list(enterprise_ids)})
        self.enterprise_ids = tuple(enterprise_ids)


class BodyTooLargeError(ServingError):
    """The request body exceeds the endpoint's limit (HTTP 413), found while streaming it."""

    status = 413
    code = "body_too_large"


class InternalServingError(ServingError):
    """An unexpected failure while answering (HTTP 500); audited like every other call."""

    status = 500
    code = "internal_error"


class AuditUnavailableError(ServingError):
    """The platform's audit log refused the entry, so the call is refused (HTTP 503)."""

    status = 503
    code = "audit_unavailable"


class PlatformCallError(ServingError):
    """The bank's model could not get the platform's decisions (endpoint down or refusing)."""

    status = 502
    code = "platform_call_failed"


class PromotionError(InputError):
    """A model promotion was refused: unknown model, version or alias; the message says the fix."""
