"""The console's Flask app: login, role checks, audited auditor views, read-only pages.

Security, by default and not configurable from a request:

- Only ``GET``/``HEAD`` reach a page; the one ``POST`` is the login form (CSRF-protected by
  Flask-WTF). Any other method on any path is answered 405 before anything else runs, so no
  request can change the home's state.
- Users and roles are the lab MLflow server's (:mod:`lab.webconsole.users`); the role is
  looked up again on every request, so a removed account or a new auditor listing takes
  effect at once. Pages a role may not open are refused 403 (:mod:`lab.webconsole.pages`).
- Every request of an auditor to a page is written to the home's audit log
  (``console_page_view``: the page, path and query, the status it was refused with if any)
  *before* the page is read; if the log refuses the append, the page is not shown (503).
- The session cookie is HttpOnly, SameSite=Strict and signed with a key from ``secrets``
  made at start (sessions end when the console stops); pages forbid framing, scripts,
  outside requests and caching (Content-Security-Policy, ``no-store``).
"""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect

from lab.errors import InputError
from lab.governance._common import utc_now
from lab.governance.audit import AuditLog
from lab.webconsole.config import ConsoleConfig
from lab.webconsole.pages import BY_ENDPOINT, may_view, nav_for
from lab.webconsole.sources import Sources, paginate
from lab.webconsole.users import User, UserStore

logger = logging.getLogger(__name__)

#: Endpoints served without a login.
PUBLIC = frozenset({"login", "static", "favicon"})
#: Headers of every response.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: Audit event of an auditor's page view.
PAGE_VIEW = "console_page_view"


def create_app(config: ConsoleConfig, users: UserStore, sources: Sources | None = None) -> Flask:
    """The console's WSGI app over ``config.home``."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),
        SESSION_COOKIE_NAME="lab_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        MAX_CONTENT_LENGTH=16 * 1024,
        WTF_CSRF_TIME_LIMIT=3600,
    )
    data = sources or Sources(config)
    app.extensions["lab_console"] = data
    audit = AuditLog(config.audit_log)

    @app.before_request
    def only_reads() -> Response | None:
        # Registered before CSRFProtect: a write to any path is 405, not a CSRF error.
        if request.method in ("GET", "HEAD"):
            return None
        if request.method == "POST" and request.endpoint == "login":
            return None
        return Response("method not allowed: the console is read-only\n", 405, {"Allow": "GET"})

    CSRFProtect(app)

    @app.before_request
    def authorize() -> Any:
        if request.endpoint in PUBLIC:
            return None
        name = session.get("user")
        user = users.lookup(name) if isinstance(name, str) else None
        if user is None:
            session.pop("user", None)  # an account gone since login; keep the CSRF token
            return redirect(url_for("login", next=request.full_path.rstrip("?")))
        g.user = user
        allowed = request.endpoint is not None and may_view(user.role, request.endpoint)
        if user.role == "auditor":
            _audit_view(audit, user, None if allowed else 403 if request.endpoint else 404)
        if request.endpoint is None:
            abort(404)
        if not allowed:
            abort(403)
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> tuple[str, int]:
        return render_template("login.html", error=f"{exc.description}; try again"), 400

    @app.errorhandler(403)
    @app.errorhandler(404)
    @app.errorhandler(503)
    def refused(exc: Any) -> tuple[str, int]:
        return render_template("error.html", code=exc.code, message=exc.description), exc.code

    @app.context_processor
    def common() -> dict[str, Any]:
        user: User | None = g.get("user")
        page = BY_ENDPOINT.get(request.endpoint or "")
        return {
            "user": user,
            "nav": nav_for(user.role) if user else [],
            "page": page,
            "home": config.home,
            "chain": data.chain(deep=False) if user else None,
        }

    _routes(app, config, users, data)
    return app


def _audit_view(log: AuditLog, user: User, refused: int | None) -> None:
    """Write an auditor's page view to the audit log; refuse the page if the log refuses."""
    payload: dict[str, Any] = {
        "page": request.endpoint or "(none)",
        "path": request.path[:200],
        "role": user.role,
        "method": request.method,
    }
    if request.query_string:
        payload["query"] = request.query_string.decode("utf-8", "replace")[:200]
    if refused is not None:
        payload["refused"] = refused
    try:
        log.record(PAGE_VIEW, payload, actor=user.name)
    except (InputError, OSError) as exc:
        logger.error("page view of %s not audited: %s", user.name, exc)
        abort(503, f"the audit log refuses the page view ({exc}); nothing is shown")


def _safe_next(target: str | None) -> str:
    """A redirect target on this site only (no scheme, no host, no protocol-relative URL)."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _page_number() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isdigit() else 1


def _routes(app: Flask, config: ConsoleConfig, users: UserStore, data: Sources) -> None:
    """Attach the login and the pages of :data:`lab.webconsole.pages.PAGES`."""

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "GET":
            return render_template("login.html", error=None)
        name = request.form.get("username", "")
        user = users.authenticate(name, request.form.get("password", ""))
        if user is None:
            return render_template("login.html", error="wrong user name or password"), 401
        session.clear()  # a new session: no fixation
        session["user"] = user.name
        session.permanent = True
        return redirect(_safe_next(request.args.get("next")))

    @app.route("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)  # browsers ask for one on every page; not a page view

    @app.route("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.route("/")
    def overview() -> str:
        jobs, counts = data.jobs()
        budgets = data.budgets()
        return render_template(
            "overview.html",
            feature_sets=data.feature_sets(),
            budgets=budgets["rows"],
            job_counts=sorted(counts.items()),
            n_jobs=len(jobs),
            n_alerts=len(data.alerts()),
            may_audit=may_view(g.user.role, "audit"),
        )

    @app.route("/features")
    def features() -> str:
        return render_template("features.html", rows=data.feature_sets())

    @app.route("/features/<ref>")
    def feature(ref: str) -> str:
        try:
            entry, jobs = data.feature_set(ref)
        except InputError as exc:
            abort(404, str(exc))
        lifts = [j["lift"] for j in jobs if j["lift"] is not None]
        return render_template(
            "feature.html",
            entry=entry,
            jobs=paginate(jobs, _page_number(), config.page_size),
            mean_lift=sum(lifts) / len(lifts) if lifts else None,
            banks=sorted({b for j in jobs for b in j.get("banks") or []}),
        )

    @app.route("/authorizations")
    def authorizations() -> str:
        day = utc_now().date()
        return render_template("authorizations.html", rows=data.authorizations(day), day=day)

    @app.route("/budgets")
    def budgets() -> str:
        found = data.budgets()
        return render_template(
            "budgets.html",
            rows=found["rows"],
            svg=found["svg"],
            jobs=found["jobs"],
            shown=config.page_size,
        )

    @app.route("/jobs")
    def jobs() -> str:
        status = request.args.get("status") or None
        rows, counts = data.jobs(status)
        return render_template(
            "jobs.html",
            jobs=paginate(rows, _page_number(), config.page_size),
            counts=sorted(counts.items()),
            status=status,
        )

    @app.route("/jobs/<job_id>")
    def job(job_id: str) -> str:
        found = data.job(job_id)
        if found is None:
            abort(404, f"no job {job_id!r} in this home's audit log")
        return render_template("job.html", job=found)

    @app.route("/audit")
    def audit() -> str:
        return render_template(
            "audit.html",
            state=data.chain(deep=True),
            info=data.audit(),
            alerts=data.alerts()[: config.page_size],
            n_alerts=len(data.alerts()),
            entries=data.entries_page(_page_number()),
        )
