"""The ``horizontal`` protocol and a bank's local data for horizontal jobs.

Stages (bank side)
------------------
``schema``
    The bank publishes what every bank needs to encode features alike (column kinds, common
    categories, rounded scaling constants; see :func:`models.horizontal.schema_from_table`) and
    how many training rows it has.
``alone``
    The bank-alone reference: the bank trains the job's model on its own training rows only
    (as many epochs as the federated job makes, no DP) and reports its evaluation on its own
    test rows, and on the held-out file if it keeps it.
``holdout``
    The bank that keeps the job's held-out file evaluates the final global model on it and
    returns the evaluation report (aggregates).

Training rounds themselves run as Flower ``train``/``evaluate`` messages driven by a Flower
strategy (:mod:`federated.horizontal_client`, :mod:`federated.horizontal_server`).

What each party learns
----------------------
- The coordinator: every bank's schema (kinds, categories, rounded constants) and row counts;
  evaluation reports (aggregates: curve points, per-decile counts) of the global and the
  bank-alone models; per round, each bank's ε so far (and, without DP, its training loss); the
  banks' model updates (or, with secure aggregation, only their weighted sum); the global model
  of every round.
- Every bank: the merged schema and the global model of every round.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from features.errors import DataError
from features.io import read_party_table
from models.evaluation import TEST_MASK_KEY, EvaluationReport
from models.protocol import Envelope, PartyContext, ProtocolError, StageMachine, dumps

if TYPE_CHECKING:  # torch loads only where a horizontal job runs (vertical nodes stay light)
    from models.horizontal import FeatureEncoder, LocalTrainingConfig

PROTOCOL = "horizontal"

#: Key of the job's :class:`HorizontalSettings` in the config of Flower train/evaluate messages.
SETTINGS_KEY = "lab.horizontal"

_MACHINE = StageMachine(
    PROTOCOL,
    {
        "schema": {StageMachine.START},
        "alone": {"schema"},
        "holdout": {"schema", "alone"},
    },
)


@dataclass(frozen=True)
class HorizontalSettings:
    """What every bank needs each round: the model, the encoding, local training and DP."""

    model: str
    hidden: tuple[int, ...]
    seed: int
    schema: dict[str, Any]
    local: dict[str, Any]
    rounds: int
    dp: dict[str, Any] | None = None
    secure_aggregation: bool = False
    clipping_range: float = 8.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise for a Flower ``ConfigRecord``."""
        return dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> HorizontalSettings:
        """Inverse of :meth:`to_json`."""
        raw = json.loads(text)
        raw["hidden"] = tuple(raw["hidden"])
        return cls(**raw)

    def local_config(self) -> LocalTrainingConfig:
        """The bank's local training settings."""
        from models.horizontal import LocalTrainingConfig

        return LocalTrainingConfig(**self.local)

    def new_model(self, n_inputs: int) -> Any:
        """A fresh network of the job's architecture."""
        from models.horizontal import build_model

        return build_model(self.model, n_inputs, self.hidden, self.seed)  # type: ignore[arg-type]

    def encoder(self) -> FeatureEncoder:
        """The feature encoder every bank builds from the merged schema."""
        from models.horizontal import FeatureEncoder

        return FeatureEncoder.from_schema(self.schema)


@contextmanager
def horizontal_errors() -> Iterator[None]:
    """Report the horizontal library's input errors as the lab's (clear, named, expected)."""
    from models.horizontal import errors

    try:
        yield
    except errors.TrainingDataError as exc:
        raise DataError(str(exc)) from exc
    except (
        errors.SchemaError,
        errors.SchemaMismatchError,
        errors.ModelSpecError,
        errors.ParameterMismatchError,
        errors.TrainingConfigError,
        errors.DPConfigError,
    ) as exc:
        raise ProtocolError(f"{type(exc).__name__}: {exc}") from exc


def training_rows(ctx: PartyContext) -> npt.NDArray[np.bool_]:
    """Which of this bank's rows are for training (the job's split keeps the rest for test)."""
    try:
        test = ctx.store.get_array(TEST_MASK_KEY).astype(bool)
    except KeyError as exc:
        raise ProtocolError(
            f"bank '{ctx.name}' has no evaluation split: run job/split first"
        ) from exc
    return ~test


def local_data(
    ctx: PartyContext, encoder: FeatureEncoder, *, test: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]:
    """This bank's encoded training (or test) rows and their labels."""
    table = ctx.table()
    if table.label is None:
        raise DataError(f"{table.path}: a bank of a horizontal job needs its label column")
    train = training_rows(ctx)
    rows = ~train if test else train
    features = table.features.loc[rows].reset_index(drop=True)
    return encoder.transform(features), table.label[rows]


class HorizontalParty:
    """Bank side of the ``horizontal`` protocol."""

    name = PROTOCOL

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage."""
        if ctx.role != "bank":
            raise ProtocolError(f"horizontal/{envelope.stage} sent to non-bank '{ctx.name}'")
        _MACHINE.advance(ctx.store, envelope)
        with horizontal_errors():
            return self._stage(envelope, ctx)

    def _stage(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        from models.horizontal import arrays_to_parameters, schema_from_table

        if envelope.stage == "schema":
            table = ctx.table()
            train = training_rows(ctx)
            schema = schema_from_table(table.features.loc[train].reset_index(drop=True))
            return [
                envelope.reply("schema", {"schema": dumps(schema), "n_train": int(train.sum())})
            ]
        settings = HorizontalSettings.from_json(envelope.text("settings"))
        if envelope.stage == "alone":
            return [self._alone(envelope, ctx, settings)]
        model = settings.new_model(settings.encoder().n_outputs)
        count = int(envelope.integer("n_arrays"))
        arrays_to_parameters(model, [envelope.array(f"a{i}") for i in range(count)])
        report = _evaluate_holdout(ctx, settings, model)
        if report is None:
            raise ProtocolError(f"bank '{ctx.name}' keeps no held-out file for this job")
        return [envelope.reply("holdout", {"report": dumps(report.to_dict())})]

    def _alone(
        self, envelope: Envelope, ctx: PartyContext, settings: HorizontalSettings
    ) -> Envelope:
        from models.horizontal import evaluate_local, train_local

        encoder = settings.encoder()
        features, labels = local_data(ctx, encoder, test=False)
        model = settings.new_model(encoder.n_outputs)
        local = replace(
            settings.local_config(), epochs=settings.rounds * settings.local_config().epochs
        )
        train_local(model, features, labels, local)
        test_x, test_y = local_data(ctx, encoder, test=True)
        payload = {"own_test": dumps(evaluate_local(model, test_x, test_y).to_dict())}
        holdout = _evaluate_holdout(ctx, settings, model)
        if holdout is not None:
            payload["holdout"] = dumps(holdout.to_dict())
        return envelope.reply("alone", payload)


def _evaluate_holdout(
    ctx: PartyContext, settings: HorizontalSettings, model: Any
) -> EvaluationReport | None:
    """Evaluate ``model`` on the held-out file this bank keeps (``None`` if it keeps none)."""
    from federated.party import PartyRuntime
    from models.horizontal import evaluate_local

    if not isinstance(ctx, PartyRuntime) or ctx.binding.holdout is None:
        return None
    spec = ctx.job().holdout or {}
    table = read_party_table(
        ctx.binding.holdout,
        id_column=str(spec.get("id_column", "id")),
        label_column=str(spec.get("label_column", "y")),
    )
    if table.label is None:
        raise DataError(f"{table.path}: the held-out file has no labels")
    return evaluate_local(model, settings.encoder().transform(table.features), table.label)
