"""The pooled reference: LightGBM on every party's columns joined in one process.

Only computable where one process may read every party's file (demos and benchmarks on this
machine): it is the ceiling a joint model is measured against, labelled as such, and never
part of a real deployment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.io import PartyTable
from lab.config import Experiment
from models.baselines import fit_and_evaluate
from models.evaluation import EvaluationReport, evaluation_split

NOTE = (
    "pooled reference: one process read every party's file and joined them; possible only in "
    "demos and benchmarks, never in a real deployment"
)


def _admitted(experiment: Experiment, tables: dict[str, PartyTable]) -> dict[str, PartyTable]:
    spec = experiment.job_spec(task="align")
    if not (spec.governance.require_authorization or any(p.feature_set for p in spec.parties)):
        return tables
    from federated.policy import load_policy

    out = dict(tables)
    for binding in experiment.bindings():
        if binding.policy is not None:
            admission = load_policy(binding.policy).admit(binding, spec, tables[binding.name])
            out[binding.name] = admission.table
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
