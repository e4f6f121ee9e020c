"""What a job returns to the lab: sizes, evaluation reports, timings and traffic.

Only aggregates: no ids, rows or scores. The ServerApp writes it as JSON into the job's result
directory, so the embedded and the deployed runtime hand results back the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.evaluation import EvaluationReport

RESULT_FILE = "result.json"

JointStatus = Literal["trained", "unavailable"]


@dataclass(frozen=True)
class PartyReport:
    """What a party disclosed about its table when it joined the job.

    ``n_admitted`` rows are what its governance policy let the job use (all rows when the job
    is not governed).
    """

    name: str
    role: str
    n_rows: int
    n_admitted: int
    n_features: int
    digest: str
    feature_kinds: dict[str, str]
    governance: dict[str, Any] = field(default_factory=dict)
    #: The head of the party's audit log when it joined (``{"head", "key"}``), if it keeps one.
    audit: dict[str, str] | None = None


@dataclass(frozen=True)
class JointOutcome:
    """The joint model's outcome: trained with a report, or honestly unavailable."""

    status: JointStatus
    reason: str | None = None
    report: EvaluationReport | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobResult:
    """Everything the coordinator learned from a job, as reported to the lab."""

    job_id: str
    name: str
    kind: str
    model_type: str
    parties: tuple[PartyReport, ...]
    n_aligned: int | None
    n_train: int
    n_test: int
    joint: JointOutcome
    bank_only: dict[str, EvaluationReport]
    stage_seconds: dict[str, float]
    traffic: dict[str, Any]
    privacy: dict[str, Any] = field(default_factory=dict)
    alignment: dict[str, Any] = field(default_factory=dict)
    #: What each node reported when it closed its part (``job/end``): its privacy charge.
    nodes: dict[str, Any] = field(default_factory=dict)
    #: Screening before training (:func:`federated.screening_protocol.run_screening`).
    screening: dict[str, Any] = field(default_factory=dict)
    #: A monitoring job's aggregates (:func:`federated.monitoring_protocol.run_monitoring`).
    monitoring: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise (reports included)."""
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> JobResult:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        joint = data["joint"]
        return cls(
            job_id=data["job_id"],
            name=data["name"],
            kind=data["kind"],
            model_type=data["model_type"],
            parties=tuple(PartyReport(**p) for p in data["parties"]),
            n_aligned=data["n_aligned"],
            n_train=data["n_train"],
            n_test=data["n_test"],
            joint=JointOutcome(
                status=joint["status"],
                reason=joint["reason"],
                report=EvaluationReport.from_dict(joint["report"]) if joint["report"] else None,
                details=joint["details"],
            ),
            bank_only={k: EvaluationReport.from_dict(v) for k, v in data["bank_only"].items()},
            stage_seconds=data["stage_seconds"],
            traffic=data["traffic"],
            privacy=data.get("privacy", {}),
            alignment=data.get("alignment", {}),
            nodes=data.get("nodes", {}),
            screening=data.get("screening", {}),
            monitoring=data.get("monitoring", {}),
        )

    def write(self, directory: Path) -> Path:
        """Write ``result.json`` into ``directory``."""
        path = directory / RESULT_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)
        return path
