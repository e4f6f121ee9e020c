"""The platform's scoring endpoint, bank serving through MLflow, promotion, MLflow auth.

Everything runs for real on 127.0.0.1: the endpoint is uvicorn serving Starlette (in a thread for
the fast tests, as ``lab platform serve`` subprocess end to end), the bank side is ``mlflow
models serve`` of a registered SecureBoost model, the registry is sqlite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from features.binning import BinSpec
from lab.governance.audit import AuditLog
from lab.governance.authorizations import AuthorizationRegistry
from lab.serving.platform_endpoint import create_app
from lab.serving.platform_scorer import PlatformScorer
from lab.serving.ratelimit import TokenBucketLimiter
from lab.serving.tokens import TokenStore
from models.secureboost.parts import PlatformPart, RuleSplit
from tests.serving_helpers import free_port, group_alive, stop, uvicorn_thread, wait_http

REF = "sme_serving@1"
BANK = "bank_a"
MODEL_ID = "sb-test-platform"
PURPOSE = "loan_approval"


def _authorizations(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    today = datetime.now(UTC).date()
    frame = pd.DataFrame(
        [
            {
                "enterprise_id": eid,
                "bank": bank,
                "purpose": PURPOSE,
                "valid_from": (today - timedelta(days=1)).isoformat(),
                "valid_to": (today + timedelta(days=30)).isoformat(),
                "groups": groups,
                "personal_consent": "false",
            }
            for eid, bank, groups in rows
        ]
    )
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Synthetic platform data published as a feature set, a platform part, authorizations."""
    from lab.demo import publish_feature_set, synthesize

    root = tmp_path_factory.mktemp("platform")
    home = root / "home"
    folder = root / "sme"
    keys = root / "keys"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_HOME", str(home))
        mp.setenv("LAB_KEYS", str(keys))
        synthesize(folder, n_enterprises=300, n_banks=1, bank_size=120, unmatched_rate=0.1, seed=5)
        publish_feature_set(folder, REF)
        table = pd.read_csv(folder / "platform.csv", dtype={"enterprise_id": str})
        ids = table["enterprise_id"].tolist()
        part = PlatformPart(
            party="platform",
            model_id=MODEL_ID,
            splits={
                "t0n0": RuleSplit("vat_sales_12m_10k_cny", (0, 1), missing_left=True),
                "t0n2": RuleSplit("tax_credit_grade", (0, 2), missing_left=False),
                "t1n1": RuleSplit("vat_sales_12m_10k_cny", (0,), missing_left=False),
            },
            bins={
                "vat_sales_12m_10k_cny": BinSpec("vat_sales_12m_10k_cny", "numeric", (50.0, 200.0)),
                "tax_credit_grade": BinSpec(
                    "tax_credit_grade", "categorical", categories=("A", "B", "M")
                ),
            },
            bank=BANK,
        )
        platform_dir = home / "parties" / "platform"
        part.save(platform_dir / "models")
        absent = "91110000MA00000001"  # authorized, but the platform has no row for it
        rows = [(i, BANK, "tax") for i in ids[:40]]
        rows += [(i, BANK, "registration") for i in ids[40:50]]  # does not cover "tax"
        rows += [(i, "bank_b", "tax") for i in ids[50:60]]  # another bank
        rows += [(absent, BANK, "tax;registration")]
        with AuthorizationRegistry(
            home / "governance.db", audit=AuditLog(home / "audit" / "log.jsonl")
        ) as reg:
            reg.import_csv(_authorizations(root / "auth.csv", rows))
        yield {
            "keys": keys,
            "home": home,
            "folder": folder,
            "dir": platform_dir,
            "table": table,
            "ids": ids,
            "absent": absent,
            "part": part,
        }


@pytest.fixture(scope="module")
def endpoint(platform: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The endpoint over real HTTP, and a token for ``bank_a`` (loan approval only)."""
    scorer = PlatformScorer(
        platform["dir"], platform["folder"] / "platform.csv", REF, platform["home"]
    )
    tokens = TokenStore.in_dir(platform["dir"])
    token = tokens.issue(BANK, [PURPOSE])
    other = tokens.issue("bank_b", ["post_loan_monitoring"])
    app = create_app(scorer, tokens, TokenBucketLimiter(rate=1000, burst=1000))
    with uvicorn_thread(app, free_port()) as url:
        yield {"url": url, "token": token, "other": other, "scorer": scorer, "app": app}


def _post(url: str, body: Any, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/v1/decisions", json=body, headers=headers, trust_env=False)


def _body(ids: list[str], **extra: Any) -> dict[str, Any]:
    return {"model_id": MODEL_ID, "purpose": PURPOSE, "enterprise_ids": ids, **extra}


def _log(platform: dict[str, Any]) -> AuditLog:
    """The platform's audit log, with the key folder it was created with."""
    return AuditLog(platform["home"] / "audit" / "log.jsonl", keys_root=platform["keys"])


def _last_scoring(platform: dict[str, Any]) -> dict[str, Any]:
    return [e for e in _log(platform).entries("scoring_call")][-1].payload


def test_tokens_are_stored_hashed(platform: dict[str, Any], endpoint: dict[str, Any]) -> None:
    path = platform["dir"] / "serving" / "tokens.json"
    text = path.read_text()
    assert endpoint["token"] not in text
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_health(endpoint: dict[str, Any]) -> None:
    response = httpx.get(f"{endpoint['url']}/healthz", trust_env=False)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "models": 1}


def test_call_without_valid_credentials_is_refused_401(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    ids = platform["ids"][:2]
    endpoint["app"].state.refusals.flush()
    for token in (None, "labsc_not-a-token", endpoint["token"] + "x"):
        response = _post(endpoint["url"], _body(ids), token)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthenticated"
        assert "bits" not in response.json()
    # A scheme other than Bearer is no credential either.
    response = httpx.post(
        f"{endpoint['url']}/v1/decisions",
        json=_body(ids),
        headers={"Authorization": f"Basic {endpoint['token']}"},
        trust_env=False,
    )
    assert response.status_code == 401
    # Counted, not written one by one: one entry for the window.
    assert endpoint["app"].state.refusals.flush() == 1
    (entry,) = [e.payload for e in _log(platform).entries("scoring_calls_aggregated")][-1:]
    assert entry["caller"] == "unauthenticated"
    assert entry["outcome"] == "unauthenticated"
    assert (entry["http_status"], entry["n_calls"]) == (401, 4)


def test_answers_split_bits_equal_to_the_platform_part_and_no_feature_values(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    ids = platform["ids"][:30]
    response = _post(endpoint["url"], _body(ids), endpoint["token"])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"model_id", "content_hash", "purpose", "split_ids", "bits"}
    part: PlatformPart = platform["part"]
    assert answer["content_hash"] == part.content_hash
    assert answer["split_ids"] == ["t0n0", "t0n2", "t1n1"]
    scorer = endpoint["scorer"]
    rows = [scorer._row_of[i] for i in ids]
    expected = part.decisions(scorer.table.features.iloc[rows].reset_index(drop=True))
    got = np.array([[c == "1" for c in row] for row in answer["bits"]])
    np.testing.assert_array_equal(got, expected)
    assert all(set(row) <= {"0", "1"} for row in answer["bits"])
    # No raw value of any platform column of these enterprises is in the answer.
    text = response.text
    table = platform["table"].set_index("enterprise_id").loc[ids]
    for column in ("vat_sales_12m_10k_cny", "registered_capital_10k_cny", "elec_kwh_12m"):
        for value in table[column].dropna():
            if float(value) not in (0.0, 1.0):
                assert str(value) not in text
    for value in set(table["tax_credit_grade"].dropna()) | set(table["industry"].dropna()):
        assert f'"{value}"' not in text
    # Only what was asked: one tree's splits, or named splits.
    response = _post(endpoint["url"], _body(ids[:3], trees=[1]), endpoint["token"])
    assert response.json()["split_ids"] == ["t1n1"]
    response = _post(endpoint["url"], _body(ids[:3], split_ids=["t0n2"]), endpoint["token"])
    assert response.json()["split_ids"] == ["t0n2"]
    entry = _last_scoring(platform)
    assert entry == {
        "model": MODEL_ID,
        "caller": BANK,
        "purpose": PURPOSE,
        "n_scored": 3,
        "n_refused": 0,
        "outcome": "answered",
        "http_status": 200,
        "n_splits": 1,
    }


def test_hetero_lr_part_answers_anonymous_coarse_bins_only(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    from models.vertical_lr.parts import PlatformLRPart

    part = PlatformLRPart(
        party="platform",
        model_id="hlr-test-platform",
        specs=(
            BinSpec("vat_sales_12m_10k_cny", "numeric", (20.0, 50.0, 200.0)),
            BinSpec("tax_credit_grade", "categorical", categories=("A", "B", "M")),
        ),
        mappings=((0, 0, 1, 2, 3), (0, 1, 1, 2, 3)),
        bank=BANK,
    )
    part.save(platform["dir"] / "models")
    ids = platform["ids"][:20]
    body = {"model_id": part.model_id, "purpose": PURPOSE, "enterprise_ids": ids}
    response = _post(endpoint["url"], body, endpoint["token"])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"model_id", "content_hash", "purpose", "features", "bins"}
    assert answer["features"] == ["vat_sales_12m_10k_cny", "tax_credit_grade"]
    scorer = endpoint["scorer"]
    rows = [scorer._row_of[i] for i in ids]
    expected = part.coarse_bins(scorer.table.features.iloc[rows].reset_index(drop=True))
    np.testing.assert_array_equal(np.asarray(answer["bins"]), expected)
    assert _last_scoring(platform)["n_splits"] == 2  # values revealed per enterprise
    # Split requests make no sense for it; authorization rules are the same.
    response = _post(endpoint["url"], {**body, "split_ids": ["t0n0"]}, endpoint["token"])
    assert response.status_code == 422
    assert response.json()["error"] == "unknown_split"
    outsider = platform["ids"][55]  # authorized bank_b only
    response = _post(endpoint["url"], {**body, "enterprise_ids": [outsider]}, endpoint["token"])
    assert response.status_code == 403


def test_enterprise_without_authorization_is_refused_403_and_audited(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    ids = platform["ids"]
    # Authorized for "registration" only (the part reads "tax"), for another bank, or never.
    refused = [ids[45], ids[55], ids[200]]
    response = _post(endpoint["url"], _body([ids[0], *refused]), endpoint["token"])
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "not_authorized"
    assert body["enterprise_ids"] == refused
    assert "bits" not in body
    entry = _last_scoring(platform)
    assert entry["outcome"] == "not_authorized"
    assert entry["http_status"] == 403
    assert entry["n_refused"] == 3
    assert entry["n_scored"] == 0
    log_text = (platform["home"] / "audit" / "log.jsonl").read_text()
    assert not any(i in log_text for i in [*refused, ids[0]])
    assert _log(platform).verify().ok


def test_purpose_outside_the_token_is_refused(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    body = _body(platform["ids"][:2], purpose="post_loan_monitoring")
    response = _post(endpoint["url"], body, endpoint["token"])
    assert response.status_code == 403
    assert response.json()["error"] == "purpose_not_allowed"


def test_unknown_enterprise_gets_an_explicit_error_not_a_default(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    absent = platform["absent"]
    response = _post(endpoint["url"], _body([platform["ids"][0], absent]), endpoint["token"])
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "unknown_enterprise"
    assert body["enterprise_ids"] == [absent]
    assert absent in body["detail"]
    assert "bits" not in body
    assert _last_scoring(platform)["outcome"] == "unknown_enterprise"


def test_malformed_requests_unknown_models_and_pins(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    url, token, ids = endpoint["url"], endpoint["token"], platform["ids"][:2]
    cases = [
        (_body([]), 422, "invalid_request"),
        (_body(ids, purpose="marketing"), 422, "invalid_request"),
        (_body(ids, colour="red"), 422, "invalid_request"),
        ({**_body(ids), "model_id": "../../etc/passwd"}, 422, "invalid_request"),
        ({**_body(ids), "model_id": "sb-nope"}, 404, "unknown_model"),
        (_body(ids, split_ids=["t9n9"]), 422, "unknown_split"),
        (_body(ids, content_hash="sha256:00"), 409, "model_hash_mismatch"),
        (_body(["x"] * 1001), 422, "invalid_request"),
    ]
    for body, status, code in cases:
        response = _post(url, body, token)
        assert (response.status_code, response.json()["error"]) == (status, code), body
    response = httpx.post(
        f"{url}/v1/decisions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {token}"},
        trust_env=False,
    )
    assert response.status_code == 422


def test_revoking_an_authorization_takes_effect_at_once(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    eid = platform["ids"][39]
    assert _post(endpoint["url"], _body([eid]), endpoint["token"]).status_code == 200
    home = platform["home"]
    with AuthorizationRegistry(home / "governance.db", audit=_log(platform)) as reg:
        assert reg.revoke(eid, BANK, PURPOSE) == 1
    assert _post(endpoint["url"], _body([eid]), endpoint["token"]).status_code == 403


def test_rate_limit_per_bank_429(platform: dict[str, Any], endpoint: dict[str, Any]) -> None:
    scorer = endpoint["scorer"]
    tokens = TokenStore.in_dir(platform["dir"])
    app = create_app(scorer, tokens, TokenBucketLimiter(rate=0.2, burst=2))
    ids = platform["ids"][:1]
    with uvicorn_thread(app, free_port()) as url:
        codes = [_post(url, _body(ids), endpoint["token"]).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = _post(url, _body(ids), endpoint["token"])
        assert limited.status_code == 429
        assert limited.json()["error"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        # Another bank has its own bucket.
        other = _post(url, _body(ids, purpose="post_loan_monitoring"), endpoint["other"])
        assert other.status_code == 404  # not limited: bank_b reaches the model check
        assert other.json()["error"] == "unknown_model"  # (the model is bank_a's)
    # The server stopped: its lifespan flushed the two 429s as one aggregated entry.
    entry = [e.payload for e in _log(platform).entries("scoring_calls_aggregated")][-1]
    assert (entry["caller"], entry["outcome"], entry["n_calls"]) == (BANK, "rate_limited", 2)


# -- abuse: every attack refused, and audited exactly once -------------------------------------


def _count(platform: dict[str, Any]) -> int:
    return sum(1 for _ in _log(platform).entries())


def _scoring_since(platform: dict[str, Any], before: int) -> list[dict[str, Any]]:
    return [e.payload for e in list(_log(platform).entries())[before:]]


def test_deeply_nested_json_is_a_422_audited_once(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    before = _count(platform)
    body = b"[" * 100_000 + b"]" * 100_000  # < 256 KiB, too deep for the JSON parser
    response = httpx.post(
        f"{endpoint['url']}/v1/decisions",
        content=body,
        headers={"Authorization": f"Bearer {endpoint['token']}"},
        trust_env=False,
    )
    assert response.status_code == 422
    assert "nested too deeply" in response.json()["detail"]
    (entry,) = _scoring_since(platform, before)
    assert (entry["outcome"], entry["http_status"], entry["caller"]) == (
        "invalid_request",
        422,
        BANK,
    )


def test_an_internal_error_is_a_500_audited_once(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    broken = platform["dir"] / "models" / "sb-broken.json"
    broken.write_text(json.dumps({"kind": "secureboost-platform-part", "bank": BANK}))
    try:
        before = _count(platform)
        response = _post(endpoint["url"], {**_body(platform["ids"][:2]), "model_id": "sb-broken"},
                         endpoint["token"])  # fmt: skip
        assert response.status_code == 500
        assert response.json() == {
            "error": "internal_error",
            "detail": "internal error at the platform; retry later",
        }
        (entry,) = _scoring_since(platform, before)
        assert (entry["outcome"], entry["http_status"], entry["model"]) == (
            "internal_error",
            500,
            "sb-broken",
        )
    finally:
        broken.unlink()


def test_a_flood_without_a_token_is_counted_not_written_call_by_call(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    scorer = endpoint["scorer"]
    app = create_app(scorer, TokenStore.in_dir(platform["dir"]), TokenBucketLimiter(1000, 50))
    with uvicorn_thread(app, free_port()) as url:
        before = _count(platform)
        with httpx.Client(trust_env=False) as client:
            codes = [
                client.post(f"{url}/v1/decisions", json=_body(["x"])).status_code
                for _ in range(200)
            ]
        assert set(codes) <= {401, 429}
        assert _count(platform) == before  # nothing fsync-ed per call
    # The lifespan flushed at shutdown: at most one entry per (caller, outcome).
    entries = _scoring_since(platform, before)
    assert 1 <= len(entries) <= 2
    assert sum(e["n_calls"] for e in entries) == 200
    assert {e["outcome"] for e in entries} <= {"unauthenticated", "rate_limited"}
    assert all(e["caller"] == "unauthenticated" for e in entries)


def _raw_post(url: str, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a request over a raw socket, stop sending once the server answers."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head)
        sock.settimeout(0.05)
        answer = b""
        for part in body_parts:
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                answer = b""
            if answer:
                break
            try:
                sock.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(20)
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_64_mib_body_is_refused_before_it_is_read(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    before = _count(platform)
    auth = f"Authorization: Bearer {endpoint['token']}\r\n".encode()
    head = (
        b"POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + auth
        + b"Content-Length: 67108864\r\n\r\n"
    )
    # Declared: refused at once, though only a few KiB were ever sent.
    answer = _raw_post(endpoint["url"], head, [b" " * 4096] * 4)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # Chunked, no length declared: refused once the streamed bytes pass the limit.
    head = head.replace(b"Content-Length: 67108864", b"Transfer-Encoding: chunked")
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    answer = _raw_post(endpoint["url"], head, [chunk] * 1024)  # up to 64 MiB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    entries = _scoring_since(platform, before)
    assert [(e["outcome"], e["http_status"]) for e in entries] == [("body_too_large", 413)] * 2


def test_the_rate_limit_counts_enterprises_times_splits_per_bank(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    scorer = endpoint["scorer"]
    app = create_app(
        scorer,
        TokenStore.in_dir(platform["dir"]),
        TokenBucketLimiter(1000, 1000),
        work_limiter=TokenBucketLimiter(rate=0.5, burst=250),
    )
    ids = platform["ids"][:39]  # 39 enterprises x 3 splits = 117 decisions a call (40: revoked)
    with uvicorn_thread(app, free_port()) as url:
        codes = [_post(url, _body(ids), endpoint["token"]).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        # One split is a third of the cost: still room for it.
        assert _post(url, _body(ids[:2], split_ids=["t0n0"]), endpoint["token"]).status_code == 200
        too_big = _post(url, _body(ids * 3), endpoint["token"])  # 351 > the whole bucket
        assert too_big.status_code == 422
        assert "asks for 351 decisions" in too_big.json()["detail"]


def test_a_model_part_serves_only_the_bank_that_trained_it(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    tokens = TokenStore.in_dir(platform["dir"])
    intruder = tokens.issue("bank_b", [PURPOSE, "post_loan_monitoring"])
    own = platform["ids"][50:53]  # bank_b's own authorized enterprises
    before = _count(platform)
    response = _post(endpoint["url"], _body(own), intruder)
    assert response.status_code == 404
    missing = _post(endpoint["url"], {**_body(own), "model_id": "sb-nothing"}, intruder)
    assert missing.status_code == 404
    # The same answer as a model that does not exist: nothing to probe.
    assert response.json()["detail"].replace(MODEL_ID, "X") == missing.json()["detail"].replace(
        "sb-nothing", "X"
    )
    first, second = _scoring_since(platform, before)
    assert (first["outcome"], first["caller"]) == ("foreign_model", "bank_b")
    assert second["outcome"] == "unknown_model"
    # Authorization before any other answer: a bad pin or split is not revealed to bank_b ...
    for extra in ({"content_hash": "sha256:00"}, {"split_ids": ["t9n9"]}):
        assert _post(endpoint["url"], _body(own, **extra), intruder).status_code == 404
    # ... nor to bank_a about enterprises that did not authorize it.
    strangers = platform["ids"][200:202]
    for extra in ({"content_hash": "sha256:00"}, {"split_ids": ["t9n9"]}):
        refused = _post(endpoint["url"], _body(strangers, **extra), endpoint["token"])
        assert (refused.status_code, refused.json()["error"]) == (403, "not_authorized")


def test_a_part_without_a_bank_is_served_to_nobody_until_bound(
    platform: dict[str, Any], endpoint: dict[str, Any]
) -> None:
    from tests.cli_helpers import run_lab

    legacy = PlatformPart(
        party="platform",
        model_id="sb-legacy-platform",
        splits={"t0n0": RuleSplit("vat_sales_12m_10k_cny", (0,), missing_left=True)},
        bins={"vat_sales_12m_10k_cny": BinSpec("vat_sales_12m_10k_cny", "numeric", (50.0,))},
    )
    legacy.save(platform["dir"] / "models")
    body = {**_body(platform["ids"][:2]), "model_id": legacy.model_id}
    before = _count(platform)
    assert _post(endpoint["url"], body, endpoint["token"]).status_code == 404
    assert _scoring_since(platform, before)[0]["outcome"] == "unbound_model"
    env = {"LAB_KEYS": str(platform["keys"])}
    args = ["platform", "bind", legacy.model_id, "--bank", BANK]
    done = run_lab(args, home=platform["home"], env=env)
    assert done.returncode == 0, done.stderr
    assert _post(endpoint["url"], body, endpoint["token"]).status_code == 200
    again = run_lab([*args[:3], "--bank", "bank_b"], home=platform["home"], env=env)
    assert again.returncode == 2
    assert "already bound to bank 'bank_a'" in again.stderr
    assert [e.type for e in _log(platform).entries()][before + 1] == "model_part_bound"


def _bank_scoring_app(tmp_path: Path, platform: dict[str, Any]) -> Any:
    """MLflow's scoring server (the app ``mlflow models serve`` runs) of a SecureBoost pyfunc
    whose one tree splits on the platform part's ``t0n0``."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    import lab.registry
    from models.secureboost.parts import BankNode, BankPart

    part = BankPart(
        party=BANK,
        model_id="sb-test-bank",
        base_score=0.0,
        trees=[
            {
                0: BankNode(0, owner="platform", split_id="t0n0"),
                1: BankNode(1, weight=-1.0),
                2: BankNode(2, weight=1.0),
            }
        ],
        bins={},
        platform_parts={
            "platform": {"model_id": MODEL_ID, "content_hash": platform["part"].content_hash}
        },
    )
    path = part.save(tmp_path / "bank-part")
    model_dir = tmp_path / "model"
    mlflow.pyfunc.save_model(
        path=str(model_dir),
        python_model=str(Path(lab.registry.__file__).with_name("pyfunc_secureboost.py")),
        artifacts={"bank_part": str(path)},
        signature=lab.registry.signature(part),
        pip_requirements=[],
    )
    return scoring_server.init(mlflow.pyfunc.load_model(str(model_dir)))


def test_a_platform_refusal_reaches_the_banks_caller_with_the_platforms_reason(
    tmp_path: Path,
    platform: dict[str, Any],
    endpoint: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not MLflow's generic "unexpected error": the platform's code, reason and status."""
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")  # init sets it; restored
    monkeypatch.setenv("LAB_PLATFORM_URL", endpoint["url"])
    monkeypatch.setenv("LAB_PLATFORM_TOKEN", endpoint["token"])
    ids = platform["ids"]

    def invoke(url: str, enterprise: str, purpose: str = PURPOSE) -> httpx.Response:
        body = {
            "dataframe_records": [{"enterprise_id": enterprise}],
            "params": {"purpose": purpose},
        }
        return httpx.post(f"{url}/invocations", json=body, timeout=30, trust_env=False)

    with uvicorn_thread(_bank_scoring_app(tmp_path, platform), free_port()) as bank:
        answered = invoke(bank, ids[0])
        assert answered.status_code == 200, answered.text
        assert answered.json()["predictions"][0] in (
            pytest.approx(0.2689414),  # sigmoid(-1): left
            pytest.approx(0.7310586),  # sigmoid(+1): right
        )
        outsider = ids[55]  # authorized for bank_b only
        refused = invoke(bank, outsider)
        assert refused.status_code == 403
        body = refused.json()
        assert "unexpected error" not in body["message"]
        assert (
            "platform 'platform' refused the scoring call (403 not_authorized)" in body["message"]
        )
        assert f"no valid authorization of bank {BANK!r} for {PURPOSE!r}" in body["message"]
        assert outsider in body["message"]
        assert body["error_code"] == "PERMISSION_DENIED"
        assert (body["platform_error"], body["platform_status"]) == ("not_authorized", 403)
        assert body["enterprise_ids"] == [outsider]
        # A purpose the bank's token does not carry: the platform's reason, again.
        wrong = invoke(bank, ids[0], purpose="post_loan_monitoring").json()
        assert "refused the scoring call (403 purpose_not_allowed)" in wrong["message"]
    # A platform that cannot be reached: 503 and why, not a 400 about the input.
    monkeypatch.setenv("LAB_PLATFORM_URL", f"http://127.0.0.1:{free_port()}")
    with uvicorn_thread(_bank_scoring_app(tmp_path / "down", platform), free_port()) as bank:
        down = invoke(bank, ids[0])
    assert down.status_code == 503
    assert "platform 'platform' could not be asked" in down.json()["message"]
    assert down.json()["platform_error"] == "platform_unreachable"


# -- end to end: a trained model served by the bank, asking the platform over HTTP -------------


@pytest.mark.slow
def test_bank_serves_champion_through_mlflow_calling_the_platform_endpoint(
    tmp_path: Path,
    lab_home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow.pyfunc

    from lab.cli import run
    from tests.serving_helpers import (
        SERVED_BANK,
        SERVED_MODEL,
        invocation_body,
        served,
        train_served_model,
    )

    trained = train_served_model(tmp_path / "sme")
    summary = trained["summary"]
    assert summary["registered_model"]["alias"] == "challenger"
    # Promotion: challenger -> champion, audited; list shows it.
    assert run(["models", "promote", SERVED_MODEL, "--from", "challenger", "--to", "champion"]) == 0
    capsys.readouterr()
    assert run(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    [row] = [r for r in listing if r["name"] == SERVED_MODEL]
    assert row["aliases"] == ["champion"]  # the champion is no longer the challenger
    [promoted] = list(AuditLog().entries("model_promoted"))
    assert promoted.payload["alias"] == "champion"
    assert promoted.payload["from_alias"] == "challenger"
    assert promoted.payload["removed_aliases"] == ["challenger"]
    assert run(["models", "promote", SERVED_MODEL, "--version", "7", "--alias", "champion"]) == 2
    assert run(["models", "promote", SERVED_MODEL, "--version", "1", "--alias", "prod"]) == 2
    # The platform issues the bank a token; the registry holds none.
    assert run(["platform", "issue-token", "--bank", SERVED_BANK]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("labsc_")
    assert token not in "".join(
        p.read_text(errors="ignore")
        for p in lab_home.rglob("*")
        if p.is_file() and p.suffix in {".json", ".yaml", ".txt", ""}
    )

    # In-process reference: the same registered model fed the platform part's decisions.
    uri = f"sqlite:///{lab_home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    model = mlflow.pyfunc.load_model(f"models:/{SERVED_MODEL}@champion")
    ref = summary["registered_model"]["platform_parts"]["platform"]
    part = PlatformPart.from_dict(
        json.loads(
            (lab_home / "parties" / "platform" / "models" / f"{ref['model_id']}.json").read_text()
        )
    )
    assert part.splits, "the joint model uses no platform split; the test proves nothing"
    bank: pd.DataFrame = trained["bank"]
    sample = bank.iloc[:25].drop(columns=["default_12m"]).reset_index(drop=True)
    from features.io import read_party_table

    table = read_party_table(
        trained["folder"] / "platform.csv", id_column="enterprise_id", id_scheme="uscc"
    )
    rows = [int(np.flatnonzero(table.ids == i)[0]) for i in sample["enterprise_id"]]
    ids = sorted(part.splits)
    bits = part.decisions(table.features.iloc[rows].reset_index(drop=True), ids)
    frame = sample.drop(columns=["enterprise_id"]).copy()
    numeric = frame.select_dtypes("number").columns
    frame[numeric] = frame[numeric].astype(float)
    for j, sid in enumerate(ids):
        frame[f"platform:platform:{sid}"] = bits[:, j]
    expected = np.asarray(model.predict(frame))

    with served(lab_home, trained["folder"], token, tmp_path / "logs") as live:
        response = httpx.post(
            f"{live['bank_url']}/invocations",
            json=invocation_body(sample),
            timeout=60,
            trust_env=False,
        )
        assert response.status_code == 200, response.text
        got = np.asarray(response.json()["predictions"], dtype=float).ravel()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        assert ((got > 0) & (got < 1)).all()
        # Reason codes from the served model: the same probabilities, platform groups only.
        body = invocation_body(sample)
        body["params"] |= {"output": "reasons", "reasons": 3}
        why = httpx.post(f"{live['bank_url']}/invocations", json=body, timeout=60, trust_env=False)
        assert why.status_code == 200, why.text
        rows = why.json()["predictions"]
        np.testing.assert_allclose([r["probability"] for r in rows], got, rtol=1e-9)
        assert set(rows[0]) >= {"margin", "base", "reason_1", "reason_1_value", "reason_3_value"}
        labels = {r[f"reason_{i}"] for r in rows for i in (1, 2, 3)} - {""}
        assert all(label.split(":", 1)[0] in {"bank", "platform"} for label in labels)
        assert not {label for label in labels if label.startswith("platform:")} & {
            f"platform:{c}" for c in table.features.columns
        }
        # One enterprise without authorization: the bank's call fails, naming the refusal.
        refused = bank[bank["enterprise_id"] == trained["refused"]].drop(columns=["default_12m"])
        response = httpx.post(
            f"{live['bank_url']}/invocations",
            json=invocation_body(refused),
            timeout=60,
            trust_env=False,
        )
        assert response.status_code >= 400
        assert "not_authorized" in response.text
        # Without the bank's credential the platform answers nothing.
        direct = httpx.post(
            f"{live['platform_url']}/v1/decisions",
            json={
                "model_id": ref["model_id"],
                "purpose": "loan_approval",
                "enterprise_ids": [str(sample["enterprise_id"][0])],
            },
            trust_env=False,
        )
        assert direct.status_code == 401
        pgids = [p.pid for p in live["procs"]]
    assert not any(group_alive(g) for g in pgids)
    calls = [e.payload for e in AuditLog().entries("scoring_call")]
    # Probabilities, then reason codes (the same bits asked again), then the refusal.
    assert [c["outcome"] for c in calls] == ["answered", "answered", "not_authorized"]
    assert calls[1]["n_splits"] == len(ids)
    # The 401 was counted and written when `lab platform serve` stopped (SIGTERM).
    flood = [e.payload for e in AuditLog().entries("scoring_calls_aggregated")]
    assert [(f["outcome"], f["n_calls"]) for f in flood] == [("unauthenticated", 1)]
    assert calls[0]["n_scored"] == 25
    assert calls[0]["n_splits"] == len(ids)


@pytest.mark.slow
def test_hetero_lr_scorecard_scores_through_the_platform_endpoint(
    tmp_path: Path,
    lab_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A registered hetero LR model asks the endpoint for coarse bins when given ids only."""
    import mlflow.pyfunc

    from features.io import read_party_table
    from models.vertical_lr.parts import PlatformLRPart
    from tests.serving_helpers import SERVED_BANK, SERVED_MODEL, SERVED_REF, train_served_model

    trained = train_served_model(tmp_path / "sme", model={"type": "hetero_lr", "max_epochs": 2})
    ref = trained["summary"]["registered_model"]["platform_parts"]["platform"]
    platform_dir = lab_home / "parties" / "platform"
    part = PlatformLRPart.load(platform_dir / "models", ref["model_id"])
    uri = f"sqlite:///{lab_home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    model = mlflow.pyfunc.load_model(f"models:/{SERVED_MODEL}@challenger")
    bank: pd.DataFrame = trained["bank"]
    sample = bank.iloc[:15].drop(columns=["default_12m"]).reset_index(drop=True)
    numeric = sample.select_dtypes("number").columns
    sample[numeric] = sample[numeric].astype(float)
    table = read_party_table(
        trained["folder"] / "platform.csv", id_column="enterprise_id", id_scheme="uscc"
    )
    rows = [int(np.flatnonzero(table.ids == i)[0]) for i in sample["enterprise_id"]]
    bins = part.coarse_bins(table.features.iloc[rows].reset_index(drop=True))
    local = sample.drop(columns=["enterprise_id"]).copy()
    for j, column in enumerate(part.features):
        local[f"platform:platform:{column}"] = bins[:, j].astype(np.int64)
    expected = np.asarray(model.predict(local))

    scorer = PlatformScorer(platform_dir, trained["folder"] / "platform.csv", SERVED_REF, lab_home)
    tokens = TokenStore.in_dir(platform_dir)
    token = tokens.issue(SERVED_BANK, [PURPOSE])
    app = create_app(scorer, tokens, TokenBucketLimiter(rate=1000, burst=1000))
    with uvicorn_thread(app, free_port()) as url:
        monkeypatch.setenv("LAB_PLATFORM_URL", url)
        monkeypatch.setenv("LAB_PLATFORM_TOKEN", token)
        remote = np.asarray(model.predict(sample))
        np.testing.assert_allclose(remote, expected, rtol=1e-12)
        card = model.predict(sample, params={"output": "scorecard"})
        assert list(card.columns) == ["probability", "score", "reason_codes"]
        # Reason codes: signed contributions, the platform's only by published group.
        why = model.predict(sample, params={"output": "reasons", "reasons": 10})
        np.testing.assert_allclose(why["probability"], remote, rtol=1e-12)
        np.testing.assert_allclose(why["probability"], 1 / (1 + np.exp(-why["margin"])))
        groups = {
            v["group"]
            for v in json.loads((trained["folder"] / "columns.json").read_text()).values()
        }
        platform_reasons = {
            r for i in range(1, 11) for r in why[f"reason_{i}"] if r.startswith("platform:")
        }
        assert platform_reasons, "no platform reason: the test proves nothing"
        assert {r.split(":", 1)[1] for r in platform_reasons} <= groups
        refused = bank[bank["enterprise_id"] == trained["refused"]].drop(columns=["default_12m"])
        with pytest.raises(Exception, match="not_authorized"):
            model.predict(refused.astype({c: float for c in numeric}))
    calls = [e.payload for e in AuditLog().entries("scoring_call")]
    assert [c["outcome"] for c in calls][-3:] == ["answered", "answered", "not_authorized"]
    by_group = pd.read_csv(next(lab_home.rglob("joint/importance_by_group.csv")))
    assert set(by_group.loc[by_group["party"] == "platform", "group"]) <= groups
    assert by_group["spread_share"].sum() == pytest.approx(1.0)
    assert calls[-3]["n_splits"] == len(part.features)


# -- MLflow server mode: basic auth, auditors read-only ----------------------------------------


@pytest.mark.slow
def test_mlflow_server_auditor_reads_but_cannot_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.cli import run

    server_dir = tmp_path / "mlflow-server"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    admin_pw = "admin-" + os.urandom(8).hex()
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", admin_pw)
    log = tmp_path / "mlflow-server.log"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("lab")),
            "mlflow",
            "serve",
            "--dir",
            str(server_dir),
            "--port",
            str(port),
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"{url}/health", proc, 180, log.read_text)
        passwords = {"mia": "modeler-pw-123456", "ann": "auditor-pw-123456"}
        for user, role in (("mia", "modeler"), ("ann", "auditor")):
            monkeypatch.setenv("LAB_MLFLOW_NEW_PASSWORD", passwords[user])
            assert (
                run(
                    [
                        "mlflow",
                        "add-user",
                        user,
                        "--role",
                        role,
                        "--dir",
                        str(server_dir),
                        "--url",
                        url,
                    ]
                )
                == 0
            )
        api = f"{url}/api/2.0/mlflow"

        def call(user: str | None, method: str, path: str, **kw: Any) -> httpx.Response:
            auth = (user, passwords[user]) if user else None
            return httpx.request(
                method, f"{api}/{path}", auth=auth, trust_env=False, timeout=30, **kw
            )

        assert (
            call(
                None, "GET", "experiments/get-by-name", params={"experiment_name": "Default"}
            ).status_code
            == 401
        )
        # The modeler creates an experiment, a run, a registered model.
        made = call("mia", "POST", "experiments/create", json={"name": "credit"})
        assert made.status_code == 200, made.text
        experiment_id = made.json()["experiment_id"]
        run_resp = call("mia", "POST", "runs/create", json={"experiment_id": experiment_id})
        assert run_resp.status_code == 200
        run_id = run_resp.json()["run"]["info"]["run_id"]
        assert (
            call(
                "mia",
                "POST",
                "runs/log-metric",
                json={"run_id": run_id, "key": "auc", "value": 0.8, "timestamp": 0},
            ).status_code
            == 200
        )
        assert (
            call(
                "mia", "POST", "registered-models/create", json={"name": "credit-model"}
            ).status_code
            == 200
        )
        # The auditor reads all of it ...
        assert (
            call("ann", "GET", "runs/get", params={"run_id": run_id}).json()["run"]["data"][
                "metrics"
            ][0]["value"]
            == 0.8
        )
        searched = call("ann", "POST", "runs/search", json={"experiment_ids": [experiment_id]})
        assert searched.status_code == 200
        assert len(searched.json()["runs"]) == 1
        assert (
            call("ann", "GET", "registered-models/get", params={"name": "credit-model"}).status_code
            == 200
        )
        # ... and every write is refused with 403.
        writes = [
            ("experiments/create", {"name": "auditor-exp"}),
            ("runs/create", {"experiment_id": experiment_id}),
            ("runs/log-metric", {"run_id": run_id, "key": "auc", "value": 0.99, "timestamp": 1}),
            ("runs/set-tag", {"run_id": run_id, "key": "k", "value": "v"}),
            ("runs/delete", {"run_id": run_id}),
            ("registered-models/create", {"name": "auditor-model"}),
            (
                "registered-models/alias",
                {"name": "credit-model", "alias": "champion", "version": "1"},
            ),
        ]
        for path, body in writes:
            assert call("ann", "POST", path, json=body).status_code == 403, path
        assert call(
            "ann",
            "PATCH",
            "experiments/update",
            json={"experiment_id": experiment_id, "new_name": "x"},
        ).status_code in (403, 405)
        metrics = call("mia", "GET", "runs/get", params={"run_id": run_id}).json()["run"]["data"][
            "metrics"
        ]
        assert [m["value"] for m in metrics] == [0.8]
    finally:
        stop(proc)
    assert not group_alive(proc.pid)
