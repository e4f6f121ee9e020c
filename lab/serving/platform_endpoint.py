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
    JSON ``{"error": <code>, "detail": <message>, ...}``.

Order of the checks (each refusal is all or nothing)
----------------------------------------------------
1. credential (401), then the bank's call budget (429): before the body is read at all;
2. body size (413, counted while streaming: a large body is never held in memory), JSON and
   fields (422);
3. the token's purposes (403), then the model: unknown, another bank's, or bound to none all
   get the same 404 (the audit log records which);
4. the bank's decision budget, ``enterprises x splits`` (429; a single call above the whole
   budget is 422);
5. published purposes of the columns (403) and every enterprise's authorization (403);
6. only then the content hash (409), unknown splits (422) and unknown enterprises (404).

Audit: every call is audited exactly once, whatever happens (500s included). Answered calls and
refusals after authentication are ``scoring_call`` entries written (and ``fsync``-ed) before the
answer leaves; if the log cannot be written the call is refused with 503 (the endpoint fails
closed). Floods of 401 and 429 refusals are counted per caller and window and written as one
``scoring_calls_aggregated`` entry each (:mod:`lab.serving.refusals`), so nobody can grow the
log, or slow genuine calls, by hammering the port.

The service binds 127.0.0.1 only; put a TLS-terminating proxy in front of it to expose it.
See :mod:`lab.serving.platform_scorer` for what each answer reveals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lab.governance import events
from lab.serving.errors import (
    AuditUnavailableError,
    AuthenticationError,
    BodyTooLargeError,
    InternalServingError,
    NotAuthorizedError,
    RateLimitedError,
    RequestFormatError,
    ServingError,
    UnknownEnterpriseError,
)
from lab.serving.platform_scorer import Answer, PlatformScorer, ScoringRequest
from lab.serving.ratelimit import DEFAULT_DECISION_BURST, DEFAULT_DECISION_RATE, TokenBucketLimiter
from lab.serving.refusals import DEFAULT_WINDOW_S, RefusalWindow
from lab.serving.tokens import TokenStore

logger = logging.getLogger(__name__)

#: The only address the endpoint listens on.
HOST = "127.0.0.1"
#: Largest request body accepted (1000 ids of a few dozen characters fit easily).
MAX_BODY_BYTES = 256 * 1024
#: Rate-limit key shared by calls without a valid credential.
UNAUTHENTICATED = "unauthenticated"
#: Who the endpoint's audit entries name as the actor.
ACTOR = "platform-scoring-endpoint"
#: Refusals counted per window instead of written one by one.
AGGREGATED_STATUSES = frozenset({401, 429})


@dataclass
class _Call:
    """What is known about a call so far (for its one audit entry)."""

    caller: str = UNAUTHENTICATED
    model: str = "-"
    purpose: str = "-"
    n_ids: int = 0


def create_app(
    scorer: PlatformScorer,
    tokens: TokenStore,
    limiter: TokenBucketLimiter,
    *,
    work_limiter: TokenBucketLimiter | None = None,
    audit_window_s: float = DEFAULT_WINDOW_S,
    actor: str = ACTOR,
) -> Starlette:
    """Build the ASGI application (see the module docstring for routes, order and audit).

    Parameters
    ----------
    scorer : PlatformScorer
        Answers admitted calls.
    tokens : TokenStore
        The banks' credentials.
    limiter : TokenBucketLimiter
        Calls per bank (and one shared key for calls without a credential).
    work_limiter : TokenBucketLimiter, optional
        Decisions (enterprises x splits) per bank; default
        :data:`~lab.serving.ratelimit.DEFAULT_DECISION_RATE` /
        :data:`~lab.serving.ratelimit.DEFAULT_DECISION_BURST`.
    audit_window_s : float
        Seconds of 401/429 refusals aggregated into one audit entry per caller.
    actor : str
        Who the audit entries name.
    """
    work = work_limiter or TokenBucketLimiter(DEFAULT_DECISION_RATE, DEFAULT_DECISION_BURST)
    refusals = RefusalWindow(scorer.audit, actor, audit_window_s)

    def audit(
        call: _Call, outcome: str, status: int, n_scored: int, n_refused: int, n: int
    ) -> None:
        events.scoring_call(
            scorer.audit,
            model=call.model,
            caller=call.caller,
            purpose=call.purpose,
            n_scored=n_scored,
            n_refused=n_refused,
            outcome=outcome,
            http_status=status,
            n_splits=n,
            actor=actor,
        )

    async def refuse(call: _Call, exc: ServingError) -> JSONResponse:
        if exc.status in AGGREGATED_STATUSES:
            refusals.add(call.caller, exc.audit_outcome, exc.status)
            return _error(exc)
        n_refused = call.n_ids
        if isinstance(exc, NotAuthorizedError | UnknownEnterpriseError):
            n_refused = len(exc.enterprise_ids)
        try:
            await run_in_threadpool(audit, call, exc.audit_outcome, exc.status, 0, n_refused, 0)
        except Exception as audit_exc:  # the log is down: fail closed, say so
            logger.error("audit log refused an entry: %s", audit_exc)
            return _error(AuditUnavailableError("the platform's audit log is unavailable"))
        return _error(exc)

    async def answer(request: Request, call: _Call) -> Answer:
        try:
            credential = tokens.authenticate(_bearer(request.headers.get("authorization")))
        except AuthenticationError:
            _limit(limiter, UNAUTHENTICATED, 1, "calls")
            raise
        call.caller = credential.bank
        _limit(limiter, credential.bank, 1, "calls")
        body = await _read_body(request)
        try:
            raw: Any = json.loads(body)
        except (ValueError, RecursionError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise RequestFormatError(f"the body is not JSON ({reason})") from exc
        scoring = ScoringRequest.from_json(raw)
        call.model, call.purpose = scoring.model_id, scoring.purpose
        call.n_ids = len(scoring.enterprise_ids)
        admission = await run_in_threadpool(scorer.admit, credential, scoring)
        if admission.cost > work.burst:
            raise RequestFormatError(
                f"this call asks for {admission.cost} decisions (enterprises x splits); one call "
                f"may ask for at most {work.burst}; send fewer enterprises or splits per call"
            )
        _limit(work, credential.bank, admission.cost, "decisions")
        return await run_in_threadpool(scorer.decide, credential, scoring, admission)

    async def decisions(request: Request) -> JSONResponse:
        started = time.perf_counter()
        call = _Call()
        try:
            result = await answer(request, call)
        except ServingError as exc:
            logger.info("refused %s (%s) in %.1f ms", call.caller, exc.code, _ms(started))
            return await refuse(call, exc)
        except Exception:
            logger.exception("scoring call of %s failed", call.caller)
            return await refuse(
                call, InternalServingError("internal error at the platform; retry later")
            )
        try:
            await run_in_threadpool(audit, call, "answered", 200, call.n_ids, 0, result.n_items)
        except Exception as exc:  # answered nothing: no audit entry, no answer
            logger.error("audit log refused an entry: %s", exc)
            return _error(AuditUnavailableError("the platform's audit log is unavailable"))
        logger.info("answered %s: %d ids in %.1f ms", call.caller, call.n_ids, _ms(started))
        return JSONResponse(result.to_json(call.purpose))

    async def health(request: Request) -> JSONResponse:
        del request
        return JSONResponse({"status": "ok", "models": len(scorer.models())})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        flusher = asyncio.create_task(_flush_every(refusals))
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await run_in_threadpool(refusals.flush)

    app = Starlette(
        routes=[
            Route("/healthz", health, methods=["GET"]),
            Route("/v1/decisions", decisions, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.refusals = refusals
    return app


async def _flush_every(refusals: RefusalWindow) -> None:
    while True:
        await asyncio.sleep(refusals.window_s)
        await run_in_threadpool(refusals.flush)


async def _read_body(request: Request) -> bytes:
    """The body, refused (413) as soon as it is known to exceed :data:`MAX_BODY_BYTES`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestFormatError(f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > MAX_BODY_BYTES:
            raise BodyTooLargeError(
                f"body of {int(declared)} bytes; send at most {MAX_BODY_BYTES} (fewer ids per call)"
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLargeError(
                f"body over {MAX_BODY_BYTES} bytes; send at most {MAX_BODY_BYTES} (fewer ids per "
                "call)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _limit(limiter: TokenBucketLimiter, key: str, cost: int, unit: str) -> None:
    wait = limiter.acquire(key, cost)
    if wait > 0:
        raise RateLimitedError(
            f"rate limit of {limiter.rate:g} {unit}/s (burst {limiter.burst}) reached for "
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
    """A uvicorn server for ``app`` on 127.0.0.1:``port`` (``.run()`` blocks).

    The lifespan is on: it flushes the aggregated refusals every window and at shutdown.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        server_header=False,
        ws="none",
    )
    return uvicorn.Server(config)
