"""A validated experiment: its config, where each party's data is, and its job spec."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any, Literal

from federated.spec import (
    AlignmentSpec,
    EvaluationSpec,
    GovernanceSpec,
    JobSpec,
    PartyBinding,
    PartySpec,
    RuntimeSpec,
    ScreeningSpec,
)
from lab.config.schema import (
    DATA_REDACTED,
    HOLDOUT_KEY,
    NODE_POLICY,
    RECENT_KEY,
    ExperimentConfig,
)
from lab.errors import ConfigError
from lab.home import lab_home
from models.baselines import GBDTSettings
from models.model_type import ModelType, model_type


class Experiment:
    """A validated experiment: the config, where it came from, and resolved data paths.

    Attributes
    ----------
    config : ExperimentConfig
        The validated config.
    path : Path or None
        The config file (``None`` for a config built in code).
    data_paths : dict[str, Path]
        Each party's resolved data file.
    config_hash : str
        ``sha256:<hex>`` of the canonical validated config (data paths absolute).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        path: Path | None,
        data_paths: dict[str, Path],
        *,
        local_files: bool = True,
    ) -> None:
        self.config = config
        self.path = path
        self.data_paths = data_paths
        self.local_files = local_files
        canonical = config.model_dump(mode="json")
        for party in canonical["parties"]:
            party["data"] = str(data_paths[party["name"]])
        if canonical["evaluation"].get("holdout"):
            canonical["evaluation"]["holdout"]["data"] = str(data_paths[HOLDOUT_KEY])
        for name in canonical["screening"]["recent"]:
            if RECENT_KEY + name in data_paths:
                canonical["screening"]["recent"][name] = str(data_paths[RECENT_KEY + name])
        self.canonical = canonical
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        self.config_hash = f"sha256:{hashlib.sha256(blob).hexdigest()}"

    @property
    def name(self) -> str:
        """The experiment's name."""
        return self.config.name

    def shareable_config(self) -> dict[str, Any]:
        """The canonical config without any party's data location (what MLflow records).

        Where a party keeps its file is that party's business; runs record each party's data
        digest (tags) instead.
        """
        out: dict[str, Any] = json.loads(json.dumps(self.canonical))
        for party in out["parties"]:
            party["data"] = DATA_REDACTED
        if out["evaluation"].get("holdout"):
            out["evaluation"]["holdout"]["data"] = DATA_REDACTED
        for name in out["screening"]["recent"]:
            if RECENT_KEY + name in self.data_paths:
                out["screening"]["recent"][name] = DATA_REDACTED
        return out

    @property
    def holdout_path(self) -> Path | None:
        """The resolved held-out file of a horizontal job, if it has one."""
        return self.data_paths.get(HOLDOUT_KEY)

    def _holds_holdout(self, party: str) -> bool:
        holdout = self.config.evaluation.holdout
        return holdout is not None and holdout.party == party

    def bindings(self) -> list[PartyBinding]:
        """Where each party's data and model store are, in config order (embedded runtime).

        Each party keeps what it owns after a job (its model part) under
        ``$LAB_HOME/parties/<name>/``, its own domain on this machine.
        """
        return [
            PartyBinding(
                name=p.name,
                role=p.role,
                data=self.data_paths[p.name],
                store=lab_home() / "parties" / p.name,
                policy=NODE_POLICY,
                governance_home=lab_home(),
                holdout=self.holdout_path if self._holds_holdout(p.name) else None,
                recent=self.data_paths.get(RECENT_KEY + p.name),
            )
            for p in self.config.parties
        ]

    @property
    def model_type(self) -> ModelType:
        """The descriptor of the experiment's model type."""
        return model_type(self.config.model.type)

    def baseline_settings(self) -> GBDTSettings:
        """LightGBM budget of the references: the joint model's, overridden by the config."""
        mirror = self.model_type.baseline
        base = GBDTSettings(**mirror(self.config.model)) if mirror else GBDTSettings()
        overrides = self.config.evaluation.baseline.model_dump(exclude_none=True)
        return GBDTSettings(**{**base.__dict__, **overrides})

    def feature_groups(self) -> dict[tuple[str, str], str]:
        """Feature group of each (party, column) whose group is published.

        A party that names a published ``feature_set`` takes each column's group from its spec
        in this home's catalog (what the platform serves; a spec is public column metadata). A
        party without one falls back to ``columns.json`` beside its data file (the synthetic
        generator writes one; entries naming another ``party`` are skipped); that file is not
        read when the parties' files are not this machine's to read (``local_files`` false: a
        deployment). Columns in neither (FATE's files) have no group.
        """
        groups: dict[tuple[str, str], str] = {}
        for party in self.config.parties:
            published = _published_groups(party.feature_set) if party.feature_set else None
            if published is not None:
                groups.update({(party.name, c): g for c, g in published.items()})
                continue
            if not self.local_files:
                continue
            meta = self.data_paths[party.name].parent / "columns.json"
            if not meta.is_file():
                continue
            raw = json.loads(meta.read_text(encoding="utf-8"))
            columns = raw.get("columns", raw) if isinstance(raw, dict) else {}
            if isinstance(columns, dict):
                for name, info in columns.items():
                    if not isinstance(info, dict) or "group" not in info:
                        continue
                    if info.get("party", party.role) not in (party.role, party.name):
                        continue
                    groups[(party.name, str(name))] = str(info["group"])
        return groups

    def _model_spec(self) -> dict[str, Any]:
        """The model section as sent to the parties (the model type shapes it)."""
        groups = {f"{p}:{c}": g for (p, c), g in self.feature_groups().items()}
        return self.model_type.job_model(self.config.model, groups)

    def job_spec(
        self, job_id: str | None = None, task: Literal["train", "align"] = "train"
    ) -> JobSpec:
        """The job specification sent to the coordinator and the parties (no data paths).

        Raises
        ------
        ConfigError
            If a training job asks for an alignment the platform cannot train on.
        """
        cfg = self.config
        if task == "train" and cfg.kind == "vertical" and cfg.alignment.reveal != "both":
            raise ConfigError(
                f"{self.path or '<config>'}: alignment.reveal={cfg.alignment.reveal!r} hides the "
                "aligned enterprises from the platform, which then cannot compute its half of a "
                "model; use reveal: both to train, or run 'lab align' for a size-only study"
            )
        return JobSpec(
            job_id=job_id or secrets.token_hex(8),
            name=cfg.name,
            kind=cfg.kind,
            parties=tuple(
                PartySpec(
                    name=p.name,
                    role=p.role,
                    id_column=p.id_column,
                    label_column=p.label_column,
                    features=tuple(p.features) if p.features is not None else None,
                    categorical=tuple(p.categorical),
                    feature_set=p.feature_set,
                    text_format=p.text_format,
                    weight_column=p.weight_column,
                )
                for p in cfg.parties
            ),
            model=self._model_spec(),
            crypto=cfg.crypto.model_dump(mode="json"),
            evaluation=EvaluationSpec(
                test_size=cfg.evaluation.test_size,
                random_state=cfg.evaluation.random_state,
                stratify=cfg.evaluation.stratify,
            ),
            baseline=self.baseline_settings(),
            runtime=RuntimeSpec(message_timeout=cfg.runtime.message_timeout),
            alignment=AlignmentSpec(
                reveal=cfg.alignment.reveal,
                id_scheme=cfg.alignment.id_scheme,
                min_intersection=cfg.alignment.min_intersection,
            ),
            governance=GovernanceSpec(
                purpose=cfg.governance.purpose,
                require_authorization=cfg.governance.require_authorization,
            ),
            secure_aggregation=cfg.secure_aggregation.model_dump(mode="json"),
            holdout=(
                None
                if cfg.evaluation.holdout is None
                else cfg.evaluation.holdout.model_dump(mode="json", exclude={"data"})
            ),
            screening=ScreeningSpec(
                recent={
                    name: None if RECENT_KEY + name in self.data_paths else ref
                    for name, ref in cfg.screening.recent.items()
                },
                bins=cfg.screening.bins,
                min_iv=cfg.screening.min_iv,
            ),
            task=task,
            config_hash=self.config_hash,
        )


def _published_groups(ref: str) -> dict[str, str] | None:
    """Column -> group of the published feature set ``ref`` (``None``: not in this catalog)."""
    from lab.governance.catalog import Catalog
    from lab.governance.errors import GovernanceError

    try:
        spec = Catalog().show(ref).spec
    except GovernanceError:
        return None
    return {name: column.group for name, column in spec.columns.items()}
