"""The platform's scoring endpoint: a small ASGI service (Starlette on uvicorn) on 127.0.0.1.

Routes
------
``GET /healthz``
    ``{"status": "ok", "models": <number of parts>}``; no credential needed, nothing about
    enterprises.
``POST /v1/decisions``
    ``Authorization: Bearer <bank token>`` and a JSON body
    ``{"model_id", "purpose", "enterprise_ids", ["split_ids"], ["trees"], ["content_hash"]}``;
    answers ``{"model_id", "content_hash", "purpose", "split_ids", "bits"}`` with one string of
    ``0``/``1`` per enterprise (``1`` = goes left at that split), in request order. For a hetero
    LR part (no ``split_ids``/``trees``) it answers ``{"model_id", "content_hash", "purpose",
    "features", "bins"}``: each enterprise's anonymous coarse bin per column. Refusals are
    JSON ``{"error": <code>, "detail": <message>, ...}`` with status 401 (credential), 403
    (purpose or authorization, listing the enterprises), 404 (unknown model or enterprise,
    listing them), 409 (content hash), 413 (body too large), 422 (malformed request) or 429
    (rate limit, with ``Retry-After``).

Every call, answered or refused, is written to the platform's audit log *before* the answer
leaves (who called, model, purpose, counts, outcome; never ids). If the log cannot be written
the call is refused with 503: the endpoint fails closed.

The service binds 127.0.0.1 only; put a TLS-terminating proxy in front of it to expose it.
See :mod:`lab.serving.platform_scorer` for what each answer reveals.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lab.governance import events
from lab.governance.errors import AuditError
from lab.serving.errors import (
    AuthenticationError,
    NotAuthorizedError,
    RateLimitedError,
    RequestFormatError,
    ServingError,
    UnknownEnterpriseError,
)
from lab.serving.platform_scorer import PlatformScorer, ScoringRequest
from lab.serving.ratelimit import TokenBucketLimiter
from lab.serving.tokens import TokenStore

logger = logging.getLogger(__name__)

#: The only address the endpoint listens on.
HOST = "127.0.0.1"
#: Largest request body accepted (1000 ids of a few dozen characters fit easily).
MAX_BODY_BYTES = 256 * 1024
#: Rate-limit key shared by calls without a valid credential (they are audited too, so they
#: must not be able to flood the log).
UNAUTHENTICATED = "unauthenticated"
#: Who the endpoint's audit entries name as the actor.
ACTOR = "platform-scoring-endpoint"


class _TooLargeError(ServingError):
    status = 413
    code = "body_too_large"


class _AuditUnavailableError(ServingError):
    status = 503
    code = "audit_unavailable"


def create_app(
    scorer: PlatformScorer,
    tokens: TokenStore,
    limiter: TokenBucketLimiter,
    *,
    actor: str = ACTOR,
) -> Starlette:
    """Build the ASGI application (see the module docstring for the routes)."""

    def audit(
        *,
        model: str,
        caller: str,
        purpose: str,
        n_scored: int,
        n_refused: int,
        outcome: str,
        status: int,
        n_splits: int,
    ) -> None:
        events.scoring_call(
            scorer.audit,
            model=model,
            caller=caller,
            purpose=purpose,
            n_scored=n_scored,
            n_refused=n_refused,
            outcome=outcome,
            http_status=status,
            n_splits=n_splits,
            actor=actor,
        )

    async def health(request: Request) -> JSONResponse:
        del request
        return JSONResponse({"status": "ok", "models": len(scorer.models())})

    async def decisions(request: Request) -> JSONResponse:
        started = time.perf_counter()
        caller = UNAUTHENTICATED
        model = "-"
        purpose = "-"
        n_ids = 0
        try:
            try:
                credential = tokens.authenticate(_bearer(request.headers.get("authorization")))
            except AuthenticationError:
                _limit(limiter, UNAUTHENTICATED)
                raise
            caller = credential.bank
            _limit(limiter, caller)
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                raise _TooLargeError(f"body of {len(body)} bytes; send at most {MAX_BODY_BYTES}")
            try:
                raw: Any = json.loads(body)
            except ValueError as exc:
                raise RequestFormatError(f"the body is not JSON ({exc})") from exc
            scoring = ScoringRequest.from_json(raw)
            model, purpose, n_ids = (
                scoring.model_id,
                scoring.purpose,
                len(scoring.enterprise_ids),
            )
            answer = await run_in_threadpool(scorer.decide, credential, scoring)
        except ServingError as exc:
            n_refused = n_ids
            if isinstance(exc, NotAuthorizedError | UnknownEnterpriseError):
                n_refused = len(exc.enterprise_ids)
            try:
                await run_in_threadpool(
                    audit,
                    model=model,
                    caller=caller,
                    purpose=purpose,
                    n_scored=0,
                    n_refused=n_refused,
                    outcome=exc.code,
                    status=exc.status,
                    n_splits=0,
                )
            except AuditError as audit_exc:
                logger.error("audit log refused an entry: %s", audit_exc)
                return _error(_AuditUnavailableError("the platform's audit log is unavailable"))
            logger.info("refused %s (%s) in %.1f ms", caller, exc.code, _ms(started))
            return _error(exc)
        try:
            await run_in_threadpool(
                audit,
                model=model,
                caller=caller,
                purpose=purpose,
                n_scored=n_ids,
                n_refused=0,
                outcome="answered",
                status=200,
                n_splits=answer.n_items,
            )
        except AuditError as exc:
            logger.error("audit log refused an entry: %s", exc)
            return _error(_AuditUnavailableError("the platform's audit log is unavailable"))
        logger.info("answered %s: %d ids in %.1f ms", caller, n_ids, _ms(started))
        return JSONResponse(answer.to_json(purpose))

    return Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Route("/v1/decisions", decisions, methods=["POST"]),
        ]
    )


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _limit(limiter: TokenBucketLimiter, key: str) -> None:
    wait = limiter.acquire(key)
    if wait > 0:
        raise RateLimitedError(
            f"rate limit of {limiter.rate:g} calls/s (burst {limiter.burst}) reached for "
            f"{key!r}; retry in {wait:.2f} s",
            retry_after=wait,
        )


def _error(exc: ServingError) -> JSONResponse:
    headers = {}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="lab-platform"'
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def make_server(app: Starlette, port: int) -> Any:
    """A uvicorn server for ``app`` on 127.0.0.1:``port`` (``.run()`` blocks)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        ws="none",
    )
    return uvicorn.Server(config)
