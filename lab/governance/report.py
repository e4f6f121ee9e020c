"""The auditor's report: budgets, their burn-down, every job's privacy-relevant parameters.

``lab audit report --out report.html`` writes one self-contained HTML file (the burn-down plot
is embedded as a PNG) from the ledger, the audit log and nothing else: no rows, no ids.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from lab.governance.audit import AuditEntry, AuditLog
from lab.governance.ledger import BudgetLedger, BudgetStatus, compose
from secure_agg.schemes import DEFAULT_SCHEME


@dataclass(frozen=True)
class BurnPoint:
    """Cumulative ε of one (feature set, bank) after one committed job."""

    at: datetime
    epsilon: float
    job_id: str


def burn_down(ledger: BudgetLedger, status: BudgetStatus) -> list[BurnPoint]:
    """Cumulative spend over time in the cap's window, composed by the cap's accountant."""
    jobs = [
        j
        for j in ledger.jobs(status.feature_set, status.bank)
        if j.state == "committed" and j.closed_at is not None
    ]
    jobs.sort(key=lambda j: j.closed_at or "")
    points: list[BurnPoint] = []
    events: list[Any] = []
    for job in jobs:
        events.extend(job.actual_events or ())
        epsilon = compose(events, status.delta, status.accountant) if events else 0.0
        points.append(BurnPoint(datetime.fromisoformat(str(job.closed_at)), epsilon, job.job_id))
    return points


def _burn_down_png(ledger: BudgetLedger, rows: list[BudgetStatus]) -> str | None:
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for status in rows:
        points = burn_down(ledger, status)
        label = f"{status.feature_set} x {status.bank}"
        if points:
            xs: list[Any] = [p.at for p in points]
            ys = [p.epsilon for p in points]
            line = ax.step(xs, ys, where="post", marker="o", label=f"{label}: spent")[0]
            ax.axhline(status.cap_epsilon, color=line.get_color(), linestyle="--", linewidth=1)
        else:
            ax.axhline(status.cap_epsilon, linestyle="--", linewidth=1, label=f"{label}: cap")
    ax.set_ylim(bottom=0)  # a burn-down starts from nothing spent
    ax.set_ylabel("ε spent (dashed: cap)")
    ax.set_title("Privacy budget burn-down")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def jobs_from_audit(log: AuditLog) -> list[dict[str, Any]]:
    """Every job the audit log knows: its start parameters, how it ended and why, its charge.

    ``status`` is ``completed``, ``refused``, ``interrupted``, ``failed`` or ``running``;
    ``reason`` says why a job did not complete; ``charges`` maps each reservation of the job
    (``<job>/<feature set>``) to its ledger state and ε (see :func:`charge_text`).
    """
    fold = JobsFold()
    for entry in log.entries():
        fold.add(entry)
    return fold.jobs()


class JobsFold:
    """:func:`jobs_from_audit` one entry at a time, for readers that follow a growing log.

    Feed entries in log order with :meth:`add`; :meth:`jobs` returns what
    :func:`jobs_from_audit` returns for the entries fed so far.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, Any]] = {}

    def jobs(self) -> list[dict[str, Any]]:
        """The jobs seen so far (those with a start), in order of first mention."""
        return [j for j in self._jobs.values() if "started" in j]

    def add(self, entry: AuditEntry) -> None:
        """Fold one entry into the jobs it concerns."""
        payload = entry.payload
        raw_id = payload.get("job_id")
        if not raw_id:
            return
        if entry.type in _BUDGET_EVENTS:
            reservation = str(raw_id)
            job = self._jobs.setdefault(
                reservation.split("/")[0], _new_job(reservation.split("/")[0])
            )
            _record_charge(job, entry.type, reservation, payload)
            return
        job = self._jobs.setdefault(str(raw_id), _new_job(str(raw_id)))
        if entry.type == "job_started":
            job.update(
                started=entry.ts,
                **{
                    k: payload.get(k)
                    for k in (
                        "config_hash",
                        "kind",
                        "model",
                        "feature_sets",
                        "banks",
                        "purpose",
                        "privacy",
                    )
                },
            )
        elif entry.type == "job_refused":
            reason = str(payload.get("reason"))
            if f"party '{payload.get('party')}'" not in reason:
                reason = f"party '{payload.get('party')}': {reason}"
            job.setdefault("reason", reason)
            if payload.get("stage") == "preflight":  # refused by the lab before it started
                job.update(
                    started=entry.ts,
                    status="refused",
                    ended=entry.ts,
                    banks=[payload["bank"]] if payload.get("bank") else [],
                    purpose=payload.get("purpose"),
                    feature_sets=payload.get("feature_sets"),
                )
        elif entry.type == "alignment":
            job["alignment"] = {
                k: payload.get(k)
                for k in ("n_platform", "n_authorized", "n_bank", "n_aligned", "reveal")
            }
        elif entry.type == "job_finished":
            job.update(
                status="completed",
                ended=entry.ts,
                metrics=payload.get("metrics"),
                served=payload.get("served"),
            )
        elif entry.type == "job_failed":
            job.update(status=payload.get("ended", "failed"), ended=entry.ts)
            job["reason"] = str(payload.get("error"))
            job["error"] = payload.get("error")
        elif entry.type == "model_registered":
            job["model"] = job.get("model") or payload.get("model_name")
            job["registered"] = f"{payload.get('model_name')} v{payload.get('version')}"


#: Ledger transitions in the audit log, keyed by the reservation ``<job>/<feature set>``.
_BUDGET_EVENTS = frozenset({"budget_checked", "budget_refused", "budget_spent", "budget_released"})


def _new_job(job_id: str) -> dict[str, Any]:
    return {"job_id": job_id, "status": "running", "charges": {}}


def _record_charge(job: dict[str, Any], kind: str, reservation: str, payload: Any) -> None:
    """Follow one reservation through the ledger's transitions (audited in order)."""
    charge = job["charges"].setdefault(reservation, {})
    if kind == "budget_checked":
        charge.update(state="reserved", planned_epsilon=payload.get("planned_epsilon"))
    elif kind == "budget_refused":
        charge.update(state="refused", epsilon=0.0)
        job.setdefault(
            "reason",
            f"budget refused: planned ε={payload.get('planned_epsilon', 0):.3f} on top of "
            f"{payload.get('spent_epsilon', 0):.3f} exceeds the cap "
            f"{payload.get('cap_epsilon')}",
        )
    elif kind == "budget_spent":
        charge.update(state="committed", epsilon=payload.get("epsilon"))
    else:
        charge.update(state="released", epsilon=0.0)


def charge_text(job: dict[str, Any]) -> str:
    """What the job was charged, per feature set: ``ε=0.412 (sme@1)``, if it reserved budget."""
    parts = []
    for reservation, charge in sorted(job.get("charges", {}).items()):
        ref = reservation.split("/", 1)[1] if "/" in reservation else reservation
        state = charge.get("state")
        if state == "reserved":
            planned = charge.get("planned_epsilon")
            shown = "?" if planned is None else f"{planned:.3f}"
            parts.append(f"ε≤{shown} held (reservation open; lab budget settle) ({ref})")
        elif state in ("committed", "released", "refused"):
            epsilon = charge.get("epsilon")
            shown = "?" if epsilon is None else f"{epsilon:.3f}"
            note = {"released": ", released", "refused": ", refused"}.get(str(state), "")
            parts.append(f"ε={shown}{note} ({ref})")
    return "; ".join(parts) if parts else "none (no reservation)"


def write_report(
    out: Path, *, ledger: BudgetLedger | None = None, log: AuditLog | None = None
) -> Path:
    """Write the auditor report to ``out`` (HTML) and return its path."""
    log = log or AuditLog()
    verify = log.verify()
    own_ledger = ledger is None
    ledger = ledger or BudgetLedger(audit=log)
    try:
        rows = ledger.status()
        png = _burn_down_png(ledger, rows)
    finally:
        if own_ledger:
            ledger.close()
    budget_table = _table(
        [
            "feature set",
            "bank",
            "cap ε",
            "δ",
            "accountant",
            "spent ε",
            "reserved ε",
            "remaining ε",
            "jobs in window",
        ],
        [
            [
                r.feature_set,
                r.bank,
                f"{r.cap_epsilon:g}",
                f"{r.delta:g}",
                r.accountant,
                f"{r.spent_epsilon:.4f}",
                f"{r.reserved_epsilon:.4f}",
                f"{r.remaining_epsilon:.4f}",
                r.jobs_in_window,
            ]
            for r in rows
        ],
    )
    job_rows = []
    for job in jobs_from_audit(log):
        privacy = job.get("privacy") or {}
        alignment = job.get("alignment") or {}
        dp = privacy.get("dp_epsilon")
        bits = privacy.get("key_bits")
        scheme = f"{privacy.get('scheme', DEFAULT_SCHEME)} {bits}" if bits else "-"
        if not privacy:  # refused before it started: nothing was encrypted or shared
            protection = "-"
        elif dp:
            protection = f"ε={dp}, δ={privacy.get('dp_delta')}"
        else:
            protection = "none (exact statistics shared)"
        job_rows.append(
            [
                job["job_id"],
                job.get("started", ""),
                job.get("status"),
                job.get("reason", "") if job.get("status") != "completed" else "",
                charge_text(job),
                job.get("model") or "-",
                ", ".join(job.get("feature_sets") or []) or "-",
                ", ".join(job.get("banks") or []),
                job.get("purpose") or "-",
                scheme,
                privacy.get("psi_reveal") or "-",
                protection,
                ", ".join(f"{k}={v}" for k, v in (privacy.get("controls") or {}).items())
                or privacy.get("bank_only_trees", "-"),
                f"{alignment.get('n_authorized', '-')}/{alignment.get('n_platform', '-')} "
                f"authorised; {alignment.get('n_aligned', '-')} aligned"
                if alignment
                else "-",
                privacy.get("bank_learns", ""),
                privacy.get("platform_learns", ""),
                job.get("registered", "-"),
            ]
        )
    jobs_table = _table(
        [
            "job",
            "started (UTC)",
            "ended",
            "why",
            "ε charged",
            "model",
            "feature sets",
            "banks",
            "purpose",
            "HE scheme, key bits",
            "PSI reveal",
            "differential privacy",
            "leakage controls",
            "rows",
            "bank learns",
            "platform learns",
            "registered",
        ],
        job_rows,
    )
    chain = "intact" if verify.ok else f"TAMPERED: {verify.summary()}"
    image = (
        f'<img alt="burn-down" src="data:image/png;base64,{png}">'
        if png
        else "<p>No budgets set.</p>"
    )
    document = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Joint-modeling lab: audit report</title>
<style>body{{font-family:sans-serif;margin:2em}}
table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;vertical-align:top}}
th{{background:#eee}}</style></head>
<body><h1>Audit report</h1>
<p>Generated {html.escape(datetime.now().astimezone().isoformat(timespec="seconds"))}.
Audit log: {html.escape(str(log.path))}, chain {html.escape(chain)}
(head: {html.escape(str(log.head()))}).</p>
<h2>Privacy budgets</h2>
<p>ε at each cap's δ, composed from the recorded privacy events by Opacus's accountant.</p>
{budget_table}
{image}
<h2>Jobs</h2>
{jobs_table}
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    return out
