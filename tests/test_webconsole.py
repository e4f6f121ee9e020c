"""``lab console`` end to end: the installed executable, a real Chromium, a governed home.

The home is built once per session the way ``lab demo`` builds its own (tests/console_helpers.py:
a feature set published, authorizations imported, a budget granted, one DP job through the
real pipeline and a second one refused for lack of budget). The console runs as its own
process (``lab console --port 0``); Debian's Chromium, driven by Playwright through
``executable_path`` (no browser download), logs in and opens every page; each figure is
checked against the CLI's ``--json`` output. Screenshots go to ``out/test-artifacts/console/``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from lab.cli import run
from lab.governance.audit import AuditLog
from tests.cli_helpers import LAB, QUIET_ENV, run_lab
from tests.conftest import REPO
from tests.console_helpers import USERS, add_users, build_governed_home

ARTIFACTS = REPO / "out" / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REF = "sme_platform@1"


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The governed home (built once), its keys and its users' folder."""
    root = tmp_path_factory.mktemp("console")
    home, keys = root / "home", root / "keys"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_HOME", str(home))
        mp.setenv("LAB_KEYS", str(keys))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        build_governed_home(home, root / "data")
    add_users(home / "mlflow-server")
    return {"home": home, "keys": keys, "users": home / "mlflow-server"}


class Console:
    """A running ``lab console`` process."""

    def __init__(self, home: Path, keys: Path, users: Path | None = None) -> None:
        env = {**os.environ, **QUIET_ENV, "LAB_KEYS": str(keys)}
        env.pop("LAB_HOME", None)
        args = [str(LAB), "console", "--home", str(home), "--port", "0"]
        if users is not None:
            args += ["--users", str(users)]
        self.proc = subprocess.Popen(
            args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert found, f"console did not start: {line}{self.proc.stderr.read()[-2000:]}"
        self.url = f"http://127.0.0.1:{found.group(1)}"

    def stop(self) -> int:
        """Stop it by its PID (SIGTERM) and return its exit status."""
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.stderr is not None:
                self.proc.stderr.close()


@pytest.fixture(scope="module")
def console(governed: dict[str, Path]) -> Iterator[Console]:
    running = Console(governed["home"], governed["keys"])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's package")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


def cli_json(governed: dict[str, Path], *args: str) -> Any:
    """``lab ARGS --json`` on the governed home (in this process: the command itself, without
    a fresh interpreter's start-up; the installed executable is tested below)."""
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buffer):
        mp.setenv("LAB_HOME", str(governed["home"]))
        mp.setenv("LAB_KEYS", str(governed["keys"]))
        code = run([*args, "--json"])
    assert code == 0, buffer.getvalue()[-500:]
    return json.loads(buffer.getvalue())


def login(page: Any, url: str, user: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#username", user)
    page.fill("#password", USERS[user][0])
    page.click("#login")
    page.wait_for_url(f"{url}/")


def shot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def cell(page: Any, row: str, field: str) -> str:
    return str(page.inner_text(f"{row} [data-field='{field}']")).strip()


def four(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def http_login(url: str, user: str, password: str | None = None) -> httpx.Client:
    client = httpx.Client(base_url=url, trust_env=False, timeout=60)
    form = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token
    response = client.post(
        "/login",
        data={
            "csrf_token": token.group(1),
            "username": user,
            "password": password or USERS[user][0],
        },
    )
    client.headers["X-Status"] = str(response.status_code)
    return client


def page_views(home: Path, keys: Path) -> list[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_KEYS", str(keys))
        return list(AuditLog(home / "audit" / "log.jsonl").entries("console_page_view"))


# -- the browser ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_auditor_reads_every_page_with_the_clis_figures(
    governed: dict[str, Path], console: Console, browser: Any
) -> None:
    views_before = len(page_views(governed["home"], governed["keys"]))
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    login(page, console.url, "ada")
    assert page.inner_text("[data-role]") == "auditor"
    shots = [shot(page, "overview")]

    # Feature sets and their usage: `lab features list|usage --json`.
    listed = cli_json(governed, "features", "list")
    page.click("text=Feature sets")
    for row in listed:
        assert cell(page, f"tr[data-ref='{row['ref']}']", "rows") == str(row["rows"])
    shots.append(shot(page, "features"))
    usage = cli_json(governed, "features", "usage", REF)
    page.click(f"a:text('{REF}')")
    assert page.inner_text("#n-usage-jobs") == str(len(usage["jobs"]))
    for job in usage["jobs"]:
        assert cell(page, f"tr[data-job='{job['job_id']}']", "lift") == four(job["auc_lift"])
    assert page.locator("#quality tbody tr").count() > 10
    shots.append(shot(page, "feature-set"))

    # Authorizations: counts only, as `lab authorizations summary --json`.
    summary = cli_json(governed, "authorizations", "summary")
    page.click("text=Authorizations")
    for row in summary:
        key = f"tr[data-bank='{row['bank']}'][data-purpose='{row['purpose']}']"
        for field in ("active", "valid", "revoked"):
            assert cell(page, key, field) == str(row[field])
    assert "enterprise" not in page.inner_text("#authorizations").lower()
    shots.append(shot(page, "authorizations"))

    # Budgets: `lab budget show --json`, and each spend as `lab audit jobs --json`.
    budgets = cli_json(governed, "budget", "show")
    page.click("text=Budgets")
    assert budgets
    for row in budgets:
        key = f"tr[data-key='{row['feature_set']}|{row['bank']}']"
        for field in ("cap_epsilon", "spent_epsilon", "reserved_epsilon", "remaining_epsilon"):
            assert cell(page, key, field) == four(row[field])
    plot = page.locator("#burn-down img")
    assert str(plot.get_attribute("src")).startswith("data:image/svg+xml;base64,")
    assert plot.evaluate("img => img.naturalWidth") > 0  # the browser rendered it
    spends = cli_json(governed, "audit", "jobs")
    assert spends
    for job in spends:
        key = f"table.spends tr[data-job='{job['job_id']}']"
        assert cell(page, key, "planned_epsilon") == four(job["planned_epsilon"])
        assert cell(page, key, "spent_epsilon") == four(job["spent_epsilon"])
    shots.append(shot(page, "budgets"))

    # Jobs: the completed one and the refused one, with lift and the MLflow run.
    page.click("header >> text=Jobs")
    statuses = sorted(page.locator("#jobs [data-field='status']").all_inner_texts())
    assert statuses == ["completed", "refused"]
    shots.append(shot(page, "jobs"))
    done = next(j for j in usage["jobs"] if j["status"] == "completed")
    page.click(f"a:text('{done['job_id']}')")
    assert page.inner_text("#job [data-field='lift']") == four(done["auc_lift"])
    assert done["mlflow_run_id"] in str(page.get_attribute("#run-link", "href"))
    assert page.inner_text("#job [data-field='pooled_auc']") != "-"
    shots.append(shot(page, "job"))

    # Audit: chain state as `lab audit verify`, alerts as `lab audit alerts`.
    verify = cli_json(governed, "audit", "verify", "--no-ledger")
    assert verify["ok"]
    page.click("header >> text=Audit")
    for _ in range(60):  # the first full verification runs in the background
        if page.get_attribute("#chain-state", "data-status") != "verifying":
            break
        time.sleep(0.5)
        page.reload()
    assert page.get_attribute("#chain-state", "data-status") == "intact"
    alerts = cli_json(governed, "audit", "alerts")
    assert int(page.inner_text("#n-alerts")) == len(alerts) >= 1
    shots.append(shot(page, "audit"))
    page.close()

    # Every page the auditor opened is in the audit log, in order, under her name.
    views = page_views(governed["home"], governed["keys"])[views_before:]
    assert [v.actor for v in views] == ["ada"] * len(views)
    opened = [v.payload["page"] for v in views]
    for name in ("overview", "features", "feature", "authorizations", "budgets", "jobs", "job"):
        assert name in opened
    assert opened.count("audit") >= 1
    print(f"\nscreenshots: {ARTIFACTS} ({', '.join(p.name for p in shots)})")


@pytest.mark.slow
def test_a_modeler_sees_no_oversight_page_and_is_not_audited(
    governed: dict[str, Path], console: Console, browser: Any
) -> None:
    views_before = len(page_views(governed["home"], governed["keys"]))
    page = browser.new_page()
    login(page, console.url, "mo")
    nav = page.inner_text("header nav")
    assert "Audit" not in nav
    assert "Authorizations" not in nav
    for path in ("/audit", "/authorizations"):
        response = page.goto(console.url + path)
        assert response is not None
        assert response.status == 403
    response = page.goto(console.url + "/budgets")
    assert response is not None
    assert response.status == 200
    page.goto(console.url + "/audit")
    shot(page, "modeler-refused-audit")
    page.close()
    assert len(page_views(governed["home"], governed["keys"])) == views_before


# -- no page changes anything ---------------------------------------------------------------------


def _state(home: Path) -> dict[str, bytes]:
    files = [home / "governance.db", home / "mlflow.db", home / "policy.yaml"]
    files += sorted((home / "catalog").rglob("*.json"))
    files += [home / "mlflow-server" / "basic_auth.db", home / "mlflow-server" / "auditors.txt"]
    return {str(p): p.read_bytes() for p in files if p.exists()}


@pytest.mark.slow
def test_an_auditor_cannot_reach_a_write_path(governed: dict[str, Path], console: Console) -> None:
    home, log_path = governed["home"], governed["home"] / "audit" / "log.jsonl"
    before, log_before = _state(home), log_path.read_bytes()
    auditor = http_login(console.url, "ada")
    assert auditor.headers["X-Status"] == "302"
    cookie = auditor.cookies.jar
    [session] = [c for c in cookie if c.name == "lab_console"]
    assert session.has_nonstandard_attr("HttpOnly")
    paths = ["/", "/features", f"/features/{REF}", "/authorizations", "/budgets", "/jobs"]
    paths += ["/audit", "/login", "/logout", "/static/console.css", "/nowhere"]
    for path in paths:
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            if (method, path) == ("POST", "/login"):
                continue
            response = auditor.request(method, path, data={"x": "1"})
            assert response.status_code in (403, 405), (method, path, response.status_code)
    # The login form is the one POST, and without its CSRF token it is refused.
    forged = httpx.post(
        console.url + "/login", data={"username": "ada", "password": USERS["ada"][0]}
    )
    assert forged.status_code == 400
    wrong = http_login(console.url, "ada", "not-her-password")
    assert wrong.headers["X-Status"] == "401"
    for path in paths[:7]:
        assert auditor.get(path).status_code == 200
    response = auditor.get("/")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    # Nothing changed but the audit log, which only grew by the auditor's page views.
    assert _state(home) == before
    log_after = log_path.read_bytes()
    assert log_after.startswith(log_before)
    added = [json.loads(line) for line in log_after[len(log_before) :].splitlines()]
    assert added
    assert {e["type"] for e in added} == {"console_page_view"}
    assert {e["actor"] for e in added} == {"ada"}
    refused = [e for e in added if e["payload"].get("method") != "GET"]
    assert refused == []  # a write never reached a page, so none was "viewed"


# -- the executable -------------------------------------------------------------------------------


def test_the_console_executable_binds_loopback_and_stops_by_pid(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    add_users(home / "mlflow-server")
    running = Console(home, tmp_path / "keys")
    try:
        response = httpx.get(running.url + "/login", trust_env=False, timeout=30)
        assert response.status_code == 200
        assert "csrf_token" in response.text
        assert response.headers["Cache-Control"] == "no-store"
        listening = [
            c for c in psutil.Process(running.proc.pid).net_connections() if c.status == "LISTEN"
        ]
        assert listening
        assert {c.laddr.ip for c in listening} == {"127.0.0.1"}
        assert httpx.get(running.url + "/jobs", trust_env=False).status_code == 302
    finally:
        assert running.stop() == 0
    assert running.proc.poll() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "--port 70000 is not a TCP port"),
        (["--home", "/nonexistent/lab-home"], "no lab home at /nonexistent/lab-home"),
        (["--users", "/nonexistent/users"], "no users at /nonexistent/users/basic_auth.db"),
    ],
)
def test_bad_console_arguments_fail_with_one_error_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    done = run_lab(["console", "--home", str(home), *args], home=home, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert message in lines[0]


def test_an_empty_home_asks_for_users_or_creates_the_admin(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    done = run_lab(["console", "--home", str(home)], home=home, timeout=60)
    assert done.returncode == 2
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" in done.stderr
    assert not (home / "mlflow-server" / "basic_auth.db").exists()
