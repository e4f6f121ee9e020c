"""The bank's side of scoring: ask the platform's endpoint for its split decisions over HTTP.

Used by the registered SecureBoost pyfunc (:class:`lab.registry.SecureBoostBankModel`) when its
input carries enterprise ids instead of precomputed decision columns. Where the endpoint is and
which credential to present come from the serving process's environment, never from the
registered model (a credential must not be in the registry, which auditors read):

``LAB_PLATFORM_URL``
    The platform endpoint's base URL, e.g. ``http://127.0.0.1:8700``.
``LAB_PLATFORM_TOKEN`` or ``LAB_PLATFORM_TOKEN_FILE``
    The bank's bearer token (``lab platform issue-token``), or a file holding it.

For a model with several platforms, ``LAB_PLATFORM_URL_<PARTY>`` (party name upper-cased,
other characters as ``_``) and the matching ``_TOKEN``/``_TOKEN_FILE`` override the defaults.

When a call fails, :func:`platform_refusals` turns the :class:`PlatformCallError` into the
error MLflow's scoring server answers with (instead of its generic "unexpected error"): its
message says which platform refused and the platform's own reason, its HTTP status follows the
refusal's (403 for an enterprise without authorization, 429 for the platform's rate limit, 503
when the platform cannot be reached), and the JSON body carries ``platform_error`` (the
platform's code), ``platform_status`` and, for refusals that list them, ``enterprise_ids``:
nothing the platform did not already put in its refusal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lab.serving.errors import PlatformCallError

URL_ENV = "LAB_PLATFORM_URL"
TOKEN_ENV = "LAB_PLATFORM_TOKEN"  # noqa: S105 - a variable name, not a secret
TOKEN_FILE_ENV = "LAB_PLATFORM_TOKEN_FILE"  # noqa: S105
#: Enterprises per call (the endpoint accepts up to 1000).
CHUNK = 1000
#: Seconds to wait for the platform before the bank's request fails.
TIMEOUT_S = 10.0


def _env_suffix(party: str) -> str:
    return "_" + re.sub(r"[^A-Za-z0-9]", "_", party).upper()


def _setting(name: str, party: str) -> str | None:
    return os.environ.get(name + _env_suffix(party)) or os.environ.get(name) or None


class PlatformClient:
    """HTTP client of one platform's scoring endpoint (keeps its connection alive).

    Parameters
    ----------
    url : str
        Base URL of the endpoint.
    token : str
        The bank's bearer token; kept in memory only, never logged.
    timeout : float
        Seconds per call.
    """

    def __init__(self, url: str, token: str, *, timeout: float = TIMEOUT_S) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"PlatformClient({self.url!r})"

    @classmethod
    def from_env(cls, party: str) -> PlatformClient:
        """The client for platform ``party`` from the environment (see the module docstring).

        Raises
        ------
        PlatformCallError
            If no URL or no token is configured.
        """
        url = _setting(URL_ENV, party)
        token = _setting(TOKEN_ENV, party)
        token_file = _setting(TOKEN_FILE_ENV, party)
        if token is None and token_file is not None:
            try:
                token = Path(token_file).read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise PlatformCallError(
                    f"cannot read the token file {token_file}: {exc}",
                    extra={"platform_error": NOT_CONFIGURED},
                ) from exc
        if url is None or token is None:
            raise PlatformCallError(
                f"no scoring endpoint configured for platform {party!r}: set {URL_ENV} and "
                f"{TOKEN_ENV} (or {TOKEN_FILE_ENV}) in the serving process's environment, or "
                "pass the platform decision columns in the input",
                extra={"platform_error": NOT_CONFIGURED},
            )
        return cls(url, token)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def decisions(
        self,
        *,
        model_id: str,
        content_hash: str,
        purpose: str,
        enterprise_ids: Sequence[str],
        split_ids: Sequence[str],
    ) -> npt.NDArray[np.bool_]:
        """Left (True) / right bits of shape (enterprises, splits), in the orders given.

        Raises
        ------
        PlatformCallError
            If the endpoint cannot be reached, refuses (its error code and message are kept),
            or answers something other than what was asked.
        """
        out = np.zeros((len(enterprise_ids), len(split_ids)), dtype=bool)
        body = {"model_id": model_id, "content_hash": content_hash, "purpose": purpose}
        for start, chunk, payload in self._answers(
            enterprise_ids, {**body, "split_ids": list(split_ids)}
        ):
            bits = payload.get("bits")
            if (
                payload.get("split_ids") != list(split_ids)
                or not isinstance(bits, list)
                or len(bits) != len(chunk)
                or any(not isinstance(b, str) or len(b) != len(split_ids) for b in bits)
            ):
                raise PlatformCallError(
                    f"platform endpoint {self.url} answered splits or rows other than asked"
                )
            for i, row in enumerate(bits):
                out[start + i] = [c == "1" for c in row]
        return out

    def coarse_bins(
        self,
        *,
        model_id: str,
        content_hash: str,
        purpose: str,
        enterprise_ids: Sequence[str],
        features: Sequence[str],
    ) -> npt.NDArray[np.int64]:
        """A hetero LR part's coarse bins, shape (enterprises, features), in the orders given.

        Raises
        ------
        PlatformCallError
            As :meth:`decisions`, or if the part's columns are not ``features``.
        """
        out = np.zeros((len(enterprise_ids), len(features)), dtype=np.int64)
        body = {"model_id": model_id, "content_hash": content_hash, "purpose": purpose}
        for start, chunk, payload in self._answers(enterprise_ids, body):
            bins = payload.get("bins")
            if (
                payload.get("features") != list(features)
                or not isinstance(bins, list)
                or len(bins) != len(chunk)
                or any(not isinstance(b, list) or len(b) != len(features) for b in bins)
            ):
                raise PlatformCallError(
                    f"platform endpoint {self.url} answered columns or rows other than asked"
                )
            out[start : start + len(chunk)] = np.asarray(bins, dtype=np.int64)
        return out

    def _answers(
        self, enterprise_ids: Sequence[str], body: dict[str, Any]
    ) -> Iterator[tuple[int, list[str], dict[str, Any]]]:
        """``(offset, ids, answer)`` per call of at most :data:`CHUNK` enterprises."""
        for start in range(0, len(enterprise_ids), CHUNK):
            chunk = list(enterprise_ids[start : start + CHUNK])
            yield start, chunk, self._post({**body, "enterprise_ids": chunk})

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a scoring request; return the JSON answer or raise :class:`PlatformCallError`."""
        import httpx

        try:
            response = self._client.post("/v1/decisions", json=body)
        except httpx.HTTPError as exc:
            raise PlatformCallError(
                f"platform endpoint {self.url} unreachable: {type(exc).__name__}: {exc}",
                extra={"platform_error": UNREACHABLE},
            ) from exc
        payload = _json(response)
        if response.status_code != 200:
            detail = payload.get("detail", response.text[:300])
            raise PlatformCallError(
                f"platform endpoint {self.url} refused ({response.status_code} "
                f"{payload.get('error', '?')}): {detail}",
                extra={
                    "platform_status": response.status_code,
                    "platform_error": payload.get("error"),
                    "platform_detail": str(detail),
                    "enterprise_ids": payload.get("enterprise_ids", []),
                },
            )
        return payload


#: ``platform_error`` of a failure that is the bank's own: no endpoint or token configured.
NOT_CONFIGURED = "platform_not_configured"
#: ``platform_error`` of a platform that could not be reached (nothing was asked).
UNREACHABLE = "platform_unreachable"

#: MLflow error code (hence the bank's HTTP status) of each platform refusal status. A 401 is
#: the serving process's credential, not the caller's: a server error, as are the platform's.
_MLFLOW_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "INTERNAL_ERROR",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    413: "INVALID_PARAMETER_VALUE",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
}


def scoring_error(party: str, exc: PlatformCallError) -> Exception:
    """The MLflow error a served model raises when platform ``party``'s call failed.

    The message is ``platform '<party>' refused the scoring call (<status> <code>): <the
    platform's detail>``, or for a call that never got an answer, why; the JSON body adds
    ``platform_error``, ``platform_status`` and ``enterprise_ids`` from the refusal.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    status = exc.extra.get("platform_status")
    error = exc.extra.get("platform_error")
    if isinstance(status, int):
        message = (
            f"platform {party!r} refused the scoring call ({status} {error or '?'}): "
            f"{exc.extra.get('platform_detail', exc)}"
        )
        code = _MLFLOW_CODES.get(status, "TEMPORARILY_UNAVAILABLE")
    elif error == UNREACHABLE:
        message = f"platform {party!r} could not be asked: {exc}"
        code = "TEMPORARILY_UNAVAILABLE"
    else:
        message = f"platform {party!r} could not be asked: {exc}"
        code = "INTERNAL_ERROR"
    body = {k: v for k, v in exc.extra.items() if k != "platform_detail"}
    return MlflowException(message, error_code=ErrorCode.Value(code), **body)


@contextmanager
def platform_refusals(party: str) -> Iterator[None]:
    """Raise a failed call to platform ``party`` as :func:`scoring_error` (for served models).

    Raises
    ------
    mlflow.exceptions.MlflowException
        In place of any :class:`PlatformCallError` raised inside the block.
    """
    try:
        yield
    except PlatformCallError as exc:
        raise scoring_error(party, exc) from exc


def _json(response: Any) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
