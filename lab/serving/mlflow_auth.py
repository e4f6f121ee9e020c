"""MLflow server authentication for the lab: MLflow's basic auth, with read-only auditors.

MLflow's basic-auth app gives every user ``default_permission`` (here ``READ``) on resources
they did not create, so auditors can read every experiment, run and model version, and cannot
change them (403). Without workspaces, though, *any* authenticated user may create a new
experiment or registered model (and then owns it). An auditor must not create anything, so
the server is configured with this module's :func:`authenticate_request` as its
``authorization_function``: it runs MLflow's own basic-auth check, then refuses every request of
a user listed in the auditors file that is not a read (403).

The auditors file (one user name per line) is named by ``LAB_MLFLOW_AUDITORS``; ``lab mlflow
add-user --role auditor`` appends to it. Reads are ``GET``/``HEAD`` requests and the ``POST``
endpoints that only search (``.../search``, GraphQL queries of the UI).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Environment variable naming the auditors file.
AUDITORS_ENV = "LAB_MLFLOW_AUDITORS"
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: POST endpoints that only read (search bodies do not fit in a query string).
_READ_POST_SUFFIXES = ("/search", "/graphql", "/get-history-bulk-interval")

_cache: dict[str, Any] = {"stamp": None, "users": frozenset()}


def auditors() -> frozenset[str]:
    """User names in the auditors file (re-read when it changes; empty if unset)."""
    raw = os.environ.get(AUDITORS_ENV)
    if not raw:
        return frozenset()
    path = Path(raw)
    try:
        st = path.stat()
    except FileNotFoundError:
        return frozenset()
    stamp = (str(path), st.st_mtime_ns, st.st_size)
    if _cache["stamp"] != stamp:
        lines = path.read_text(encoding="utf-8").splitlines()
        _cache["users"] = frozenset(s.strip() for s in lines if s.strip())
        _cache["stamp"] = stamp
    users: frozenset[str] = _cache["users"]
    return users


def is_read(method: str, path: str) -> bool:
    """Whether a request only reads."""
    if method.upper() in _READ_METHODS:
        return True
    return method.upper() == "POST" and path.rstrip("/").endswith(_READ_POST_SUFFIXES)


def authenticate_request() -> Any:
    """MLflow ``authorization_function``: basic auth, then auditors may only read."""
    from flask import request
    from mlflow.server.auth import authenticate_request_basic_auth, make_forbidden_response

    result = authenticate_request_basic_auth()
    username = getattr(result, "username", None)
    if (
        username is not None
        and username in auditors()
        and not is_read(request.method, request.path)
    ):
        return make_forbidden_response()
    return result
