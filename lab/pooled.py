"""The pooled reference: LightGBM on every party's columns joined in one process.

Only computable where one process may read every party's file (demos and benchmarks on this
machine): it is the ceiling a joint model is measured against, labelled as such, and never
part of a real deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.io import PartyTable, read_party_table
from lab.config import Experiment
from models.baselines import fit_and_evaluate
from models.evaluation import EvaluationReport, evaluation_split

NOTE = (
    "pooled reference: one process read every party's file and joined them; possible only in "
    "demos and benchmarks, never in a real deployment"
)


def _admitted(experiment: Experiment, tables: dict[str, PartyTable]) -> dict[str, PartyTable]:
    """Each table restricted as its node's policy restricts it (what the job could use)."""
    from lab.governance.node import LabNodePolicy, decide

    spec = experiment.job_spec(task="align")
    policy = LabNodePolicy()
    out = dict(tables)
    for binding in experiment.bindings():
        grant = decide(binding, spec)
        if grant.governed:
            out[binding.name] = policy.admit(binding, spec, grant, tables[binding.name]).table
    return out


@dataclass(frozen=True)
class PooledReference:
    """The pooled model's test evaluation and the number of rows in the join."""

    report: EvaluationReport
    n_joined: int


def pooled_reference(experiment: Experiment, tables: dict[str, PartyTable]) -> PooledReference:
    """Join the bank with every platform on id and train LightGBM on all columns.

    The join uses the rows the job may use: a governed platform's table is first restricted by
    the same node policy its node applies (published feature set, authorizations). The
    evaluation split uses the same rule as the bank's (canonical id order, then
    ``train_test_split``), so on the same rows both split identically.
    """
    cfg = experiment.config
    tables = _admitted(experiment, tables)
    bank_cfg = next(p for p in cfg.parties if p.label_column is not None)
    bank = tables[bank_cfg.name]
    keep = np.ones(bank.n_rows, dtype=bool)
    positions: dict[str, np.ndarray] = {}
    for party in cfg.parties:
        if party.name == bank_cfg.name:
            continue
        index = pd.Index(tables[party.name].ids)
        pos = index.get_indexer(pd.Index(bank.ids))
        keep &= pos >= 0
        positions[party.name] = pos
    rows = np.flatnonzero(keep)
    frames = [bank.features.iloc[rows].reset_index(drop=True).add_prefix(f"{bank_cfg.name}__")]
    for name, pos in positions.items():
        part = tables[name].features.iloc[pos[rows]].reset_index(drop=True)
        frames.append(part.add_prefix(f"{name}__"))
    features = pd.concat(frames, axis=1)
    if bank.label is None:
        raise ValueError(f"party '{bank_cfg.name}' was read without its label column")
    label = bank.label[rows]
    ev = cfg.evaluation
    test_mask = evaluation_split(
        bank.ids[rows],
        label,
        test_size=ev.test_size,
        random_state=ev.random_state,
        stratify=ev.stratify,
    )
    report = fit_and_evaluate(
        features, label, test_mask, experiment.baseline_settings(), seed=ev.random_state
    )
    return PooledReference(report=report, n_joined=int(rows.size))


def pooled_horizontal(experiment: Experiment, tables: dict[str, PartyTable]) -> PooledReference:
    """Pool every bank's training rows and train the job's own model on them in one process.

    Each bank's training rows are those its node trains on (the same split rule); the model,
    encoder and epochs (``rounds x local_epochs`` passes) are the federated job's, without DP.
    Scored on the job's held-out file when it has one, else on the banks' pooled test rows.
    """
    from federated.horizontal_protocol import HorizontalSettings
    from federated.horizontal_server import settings_for
    from models.horizontal import (
        LocalTrainingConfig,
        evaluate_local,
        schema_from_table,
        train_local,
    )

    cfg = experiment.config
    ev = cfg.evaluation
    train_frames, train_labels, test_frames, test_labels = [], [], [], []
    for party in cfg.parties:
        table = tables[party.name]
        if table.label is None:
            raise ValueError(f"party '{party.name}' was read without its label column")
        test = evaluation_split(
            table.ids,
            table.label,
            test_size=ev.test_size,
            random_state=ev.random_state,
            stratify=ev.stratify,
        )
        train_frames.append(table.features.loc[~test])
        train_labels.append(table.label[~test])
        test_frames.append(table.features.loc[test])
        test_labels.append(table.label[test])
    features = pd.concat(train_frames, ignore_index=True)
    labels = np.concatenate(train_labels)
    schema = schema_from_table(features)
    settings: HorizontalSettings = settings_for(experiment.job_spec(), schema)
    encoder = settings.encoder()
    model = settings.new_model(encoder.n_outputs)
    local = settings.local_config()
    config = LocalTrainingConfig(
        **{**local.__dict__, "epochs": local.epochs * settings.rounds, "proximal_mu": 0.0}
    )
    train_local(model, encoder.transform(features), labels, config)
    holdout = ev.holdout
    if holdout is not None and experiment.holdout_path is not None:
        held = read_party_table(
            experiment.holdout_path, id_column=holdout.id_column, label_column=holdout.label_column
        )
        if held.label is None:
            raise ValueError(f"{held.path}: the held-out file has no labels")
        test_x, test_y = held.features, held.label
    else:
        test_x = pd.concat(test_frames, ignore_index=True)
        test_y = np.concatenate(test_labels)
    report = evaluate_local(model, encoder.transform(test_x), test_y)
    return PooledReference(report=report, n_joined=int(labels.size))
