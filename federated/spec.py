"""The job specification every node receives, and where each party's data lives.

A :class:`JobSpec` is what the coordinator sends to the parties: names, roles, columns and
parameters, never data paths. A :class:`PartyBinding` is local to a node: it tells the code
acting for a party where that party's own data is. On the deployment engine it comes from the
SuperNode's ``node_config``; in the embedded simulation, from the lab that started the job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from features.stability import DEFAULT_BINS
from features.text_format import DEFAULT_FORMAT, TextFormat
from models.baselines import GBDTSettings

Role = Literal["bank", "platform"]
JobKind = Literal["vertical", "horizontal"]


class SpecError(ValueError):
    """A job specification or party binding is malformed."""


@dataclass(frozen=True)
class PartySpec:
    """One party as every node sees it: name, role, column settings and its file's format.

    ``text_format`` is how the party's CSV is written (delimiter, encoding, decimal mark,
    extra missing tokens); the node reading the file applies it.
    """

    name: str
    role: Role
    id_column: str = "id"
    label_column: str | None = None
    features: tuple[str, ...] | None = None
    categorical: tuple[str, ...] = ()
    feature_set: str | None = None
    text_format: TextFormat = DEFAULT_FORMAT
    weight_column: str | None = None


@dataclass(frozen=True)
class GovernanceSpec:
    """What a job declares to the data holders' governance policies.

    ``purpose`` is checked against the published feature sets' allowed purposes and the
    enterprises' authorizations; with ``require_authorization`` a platform serves only
    enterprises authorised for this bank and purpose.
    """

    purpose: str = "credit_risk_modeling"
    require_authorization: bool = False


@dataclass(frozen=True)
class EvaluationSpec:
    """How the label holder splits aligned rows into train and test."""

    test_size: float = 0.2
    random_state: int = 42
    stratify: bool = True


@dataclass(frozen=True)
class AlignmentSpec:
    """How parties align enterprises (private set intersection).

    ``reveal``: who learns the intersection (``both``; ``bank`` only; ``size``: the platform
    learns only its size). ``id_scheme``: how every party normalises ids
    (:mod:`features.ids`). ``min_intersection``: smaller intersections are refused.
    """

    reveal: Literal["both", "bank", "size"] = "both"
    id_scheme: Literal["text", "casefold", "uscc"] = "text"
    min_intersection: int = 100


@dataclass(frozen=True)
class RuntimeSpec:
    """Runtime limits: how long the coordinator waits for one hop before failing the job."""

    message_timeout: float = 3600.0


@dataclass(frozen=True)
class ScreeningSpec:
    """Screening before training (:mod:`federated.screening_protocol`).

    ``recent``: the parties that compare a recent window with the training window, each with
    the published feature-set version (``name@version``) its node serves as that window, or
    ``None`` for the file the party's own node keeps (``recent`` in its binding): never a path.
    ``bins``: bins each party fixes on its training window. ``min_iv``: platform features whose
    information value (computed by the bank from encrypted WOE counts) is below it are not used.
    """

    recent: Mapping[str, str | None] = field(default_factory=dict)
    bins: int = DEFAULT_BINS
    min_iv: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether the job screens anything."""
        return bool(self.recent) or self.min_iv is not None


@dataclass(frozen=True)
class MonitoringSpec:
    """A post-loan monitoring job's model and windows (:mod:`federated.monitoring_protocol`).

    ``parts``: per party, the ``model_id`` and ``content_hash`` of its part of the registered
    model being monitored (each node loads its own part from its own store and refuses another
    hash). ``reference``: per platform, the published feature-set version the model was trained
    on (the reference window; the job's ``feature_set`` is the new window). The bank's reference
    window is the training file its own node keeps (``reference`` in its binding). ``bins``:
    bins each party fixes on its reference window. ``vintage_column`` and ``outcome_column``: the
    bank book's origination month and matured outcome (missing while immature); they stay at the
    bank. ``warning_threshold``: the default probability from which an enterprise is on the
    early-warning list; ``reasons``: how many moved reason codes to list per enterprise;
    ``segment_column``: a column of the bank's book (not a model column, e.g. the borrower's
    province from its own records) within whose values the bank also compares score
    distributions. ``model``: the registered model's name (the bank's store keeps each model's
    last scores and warning list under it).
    """

    parts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    reference: Mapping[str, str] = field(default_factory=dict)
    bins: int = DEFAULT_BINS
    vintage_column: str = "vintage"
    outcome_column: str = "default_12m"
    warning_threshold: float = 0.2
    reasons: int = 3
    model: str = ""
    segment_column: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """Everything the coordinator and the parties need to run one job (no data paths)."""

    job_id: str
    name: str
    kind: JobKind
    parties: tuple[PartySpec, ...]
    model: Mapping[str, Any]
    crypto: Mapping[str, Any]
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    baseline: GBDTSettings = field(default_factory=GBDTSettings)
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    alignment: AlignmentSpec = field(default_factory=AlignmentSpec)
    governance: GovernanceSpec = field(default_factory=GovernanceSpec)
    secure_aggregation: Mapping[str, Any] = field(default_factory=dict)
    holdout: Mapping[str, Any] | None = None
    screening: ScreeningSpec = field(default_factory=ScreeningSpec)
    task: Literal["train", "align", "monitor"] = "train"
    config_hash: str = ""
    monitoring: MonitoringSpec | None = None

    @property
    def model_type(self) -> str:
        """The joint model's type (``secureboost`` ...)."""
        return str(self.model["type"])

    def party(self, name: str) -> PartySpec:
        """Return the party called ``name``."""
        for party in self.parties:
            if party.name == name:
                return party
        raise SpecError(f"job '{self.name}' has no party '{name}'")

    def by_role(self, role: Role) -> tuple[PartySpec, ...]:
        """Parties with the given role, in config order."""
        return tuple(p for p in self.parties if p.role == role)

    def label_holder(self) -> PartySpec:
        """The one party holding labels in a vertical job (the bank, in a monitoring job)."""
        holders = [p for p in self.parties if p.label_column is not None]
        if self.task == "monitor":
            holders = [p for p in self.parties if p.role == "bank"]
        if len(holders) != 1:
            raise SpecError(f"job '{self.name}' needs exactly one label holder")
        return holders[0]

    def to_json(self) -> str:
        """Serialise for the wire (deterministic)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
            parties = tuple(
                PartySpec(
                    name=p["name"],
                    role=p["role"],
                    id_column=p["id_column"],
                    label_column=p["label_column"],
                    features=tuple(p["features"]) if p["features"] is not None else None,
                    categorical=tuple(p["categorical"]),
                    feature_set=p.get("feature_set"),
                    text_format=_text_format(p.get("text_format")),
                    weight_column=p.get("weight_column"),
                )
                for p in data["parties"]
            )
            return cls(
                job_id=data["job_id"],
                name=data["name"],
                kind=data["kind"],
                parties=parties,
                model=dict(data["model"]),
                crypto=dict(data["crypto"]),
                evaluation=EvaluationSpec(**data["evaluation"]),
                baseline=GBDTSettings(**data["baseline"]),
                runtime=RuntimeSpec(**data["runtime"]),
                alignment=AlignmentSpec(**data["alignment"]),
                governance=GovernanceSpec(**data.get("governance", {})),
                secure_aggregation=dict(data.get("secure_aggregation", {})),
                holdout=data.get("holdout"),
                screening=ScreeningSpec(**data.get("screening", {})),
                task=data["task"],
                config_hash=data["config_hash"],
                monitoring=(
                    None if data.get("monitoring") is None else MonitoringSpec(**data["monitoring"])
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed job specification: {exc}") from exc


def _text_format(raw: Any) -> TextFormat:
    """A party's :class:`TextFormat` from its JSON form (absent: the default)."""
    if raw is None:
        return DEFAULT_FORMAT
    return TextFormat(
        delimiter=str(raw["delimiter"]),
        encoding=str(raw["encoding"]),
        decimal=raw["decimal"],
        na_values=tuple(str(v) for v in raw["na_values"]),
    )


@dataclass(frozen=True)
class PartyBinding:
    """Where one party's data lives, known only to the node acting for that party.

    ``store`` is the party's own folder for what it keeps after a job (its model part); it
    stays in the party's domain like the data; so does ``holdout``, a held-out labelled file
    the party keeps for a horizontal job's global evaluation. ``policy`` names the node's
    governance policy
    (``module:Class``, see :mod:`federated.policy`) and ``governance_home`` the folder of its
    catalog, authorizations and audit log. ``fault`` is a fault drill (off unless set; see
    :mod:`federated.faults`). ``recent`` is the party's recent window for screening, a file
    of the same columns kept in its own domain (a platform serving a published feature set
    takes its recent window from its own catalog instead).
    """

    name: str
    role: Role
    data: Path
    store: Path | None = None
    policy: str | None = None
    governance_home: Path | None = None
    holdout: Path | None = None
    fault: str | None = None
    #: The party's recent window for screening (a file of the same columns), if it keeps one.
    recent: Path | None = None
    #: A bank's reference window for monitoring (the file its model was trained on).
    reference: Path | None = None

    def to_dict(self) -> dict[str, str]:
        """Plain form for node or run configs."""
        out = {"party": self.name, "role": self.role, "data": str(self.data)}
        if self.store is not None:
            out["store"] = str(self.store)
        if self.policy is not None:
            out["policy"] = self.policy
        if self.governance_home is not None:
            out["governance-home"] = str(self.governance_home)
        if self.holdout is not None:
            out["holdout"] = str(self.holdout)
        if self.fault is not None:
            out["fault"] = self.fault
        if self.recent is not None:
            out["recent"] = str(self.recent)
        if self.reference is not None:
            out["reference"] = str(self.reference)
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str) -> PartyBinding:
        """Read a binding from a node config (``party``, ``role``, ``data`` keys)."""
        missing = [k for k in ("party", "role", "data") if not raw.get(k)]
        if missing:
            raise SpecError(f"{source} lacks {missing}; set party, role and data for this node")
        role = str(raw["role"])
        if role not in ("bank", "platform"):
            raise SpecError(f"{source}: role must be 'bank' or 'platform', got '{role}'")
        store = raw.get("store")
        home = raw.get("governance-home")
        holdout = raw.get("holdout")
        recent = raw.get("recent")
        reference = raw.get("reference")
        return cls(
            name=str(raw["party"]),
            role=cast(Role, role),
            data=Path(str(raw["data"])),
            store=Path(str(store)) if store else None,
            policy=str(raw["policy"]) if raw.get("policy") else None,
            governance_home=Path(str(home)) if home else None,
            holdout=Path(str(holdout)) if holdout else None,
            fault=str(raw["fault"]) if raw.get("fault") else None,
            recent=Path(str(recent)) if recent else None,
            reference=Path(str(reference)) if reference else None,
        )
