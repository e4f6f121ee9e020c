"""Parties in one process: the estimators' runtime for notebooks and tests.

Each party gets its own table file, store and runtime (reading only its own table), joined
to an :class:`~federated.transport.InProcessTransport`; rows are taken as already aligned.
Jobs run the same protocols through Flower (``lab train``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from federated.driver import close_parties
from federated.party import DictStore, PartyRuntime
from federated.policy import COLUMNS_FILE
from federated.protocols import party_protocols
from federated.spec import JobSpec, PartyBinding, PartySpec
from federated.transport import InProcessTransport, raise_for_errors, run_protocol
from models.alignment import ALIGNED_ROWS_KEY
from models.evaluation import TEST_MASK_KEY
from models.guard import NodeLimits
from models.protocol import COORDINATOR, Envelope

#: The bank's weight column in an in-process job (estimators' ``sample_weight``).
WEIGHT_COLUMN = "_sample_weight"


@dataclass(frozen=True)
class InProcessJob:
    """A joined in-process job: its transport, runtimes and scratch folder."""

    transport: InProcessTransport
    runtimes: dict[str, PartyRuntime]
    folder: Path
    spec: JobSpec

    @property
    def platforms(self) -> list[str]:
        """The platforms' names, in the order given."""
        return [p.name for p in self.spec.parties if p.role == "platform"]

    @property
    def order(self) -> list[str]:
        """Every party's name: the bank first."""
        return [p.name for p in self.spec.parties]

    def run(self, start: Envelope) -> list[Envelope]:
        """Run a protocol from the coordinator's first envelope; return what reached it."""
        return run_protocol(self.transport, [start])

    def close(self) -> dict[str, dict[str, Any]]:
        """End the job at every party; return each one's privacy report (its own counts)."""
        return close_parties(self.transport, "finished", strict=True)

    def platform_parts(self, refs: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, Any]]:
        """Each platform's saved part (JSON) from its ``{"model_id": ...}`` reference."""
        return {
            party: json.loads(
                (self.folder / "stores" / party / "models" / f"{ref['model_id']}.json").read_text(
                    encoding="utf-8"
                )
            )
            for party, ref in refs.items()
        }


def check_inputs(
    x_bank: pd.DataFrame, y: npt.ArrayLike, x_platforms: Mapping[str, pd.DataFrame]
) -> npt.NDArray[Any]:
    """Validate estimator inputs; return the labels as an array."""
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(x_bank):
        raise ValueError(f"y must have one label per row of X_bank ({len(x_bank)})")
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError("y must hold 0 (good) and 1 (bad)")
    for name, frame in x_platforms.items():
        if len(frame) != len(x_bank):
            raise ValueError(f"X_platforms[{name!r}] has {len(frame)} rows, X_bank {len(x_bank)}")
    return labels


@contextmanager
def inprocess_job(
    x_bank: pd.DataFrame,
    y: npt.ArrayLike,
    x_platforms: Mapping[str, pd.DataFrame],
    *,
    name: str,
    model: dict[str, Any],
    crypto: dict[str, Any],
    limits: NodeLimits,
    test_mask: npt.NDArray[np.bool_] | None = None,
    sample_weight: npt.NDArray[np.float64] | None = None,
    groups: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[InProcessJob]:
    """Join a bank and its platforms in this process, aligned row by row, in a scratch folder.

    The bank is named ``bank``; platforms keep their mapping keys. ``test_mask`` marks rows the
    bank holds out of training (none by default); ``sample_weight`` becomes the bank's weight
    column (:data:`WEIGHT_COLUMN`). ``limits`` are every party's node limits:
    the caller acts for all of them (see :func:`models.guard.single_operator`). ``groups``
    (party -> column -> feature group) is written beside the parties' files as the
    ``columns.json`` an unpublished node reads its column groups from.
    """
    labels = check_inputs(x_bank, y, x_platforms)
    ids = np.array([f"r{i}" for i in range(len(x_bank))])
    with tempfile.TemporaryDirectory(prefix=f"{name}-fit-") as tmp:
        folder = Path(tmp)
        if groups:
            meta = {
                column: {"party": party, "group": group}
                for party, columns in groups.items()
                for column, group in columns.items()
            }
            (folder / COLUMNS_FILE).write_text(json.dumps(meta), encoding="utf-8")
        frames = {"bank": x_bank.assign(id=ids, y=labels)}
        if sample_weight is not None:
            frames["bank"] = frames["bank"].assign(**{WEIGHT_COLUMN: sample_weight})
        frames.update({party: frame.assign(id=ids) for party, frame in x_platforms.items()})
        runtimes = {}
        specs = []
        for party, frame in frames.items():
            path = folder / f"{party}.parquet"
            frame.reset_index(drop=True).to_parquet(path)
            role: Literal["bank", "platform"] = "bank" if party == "bank" else "platform"
            weight = WEIGHT_COLUMN if role == "bank" and sample_weight is not None else None
            specs.append(
                PartySpec(party, role, "id", "y" if role == "bank" else None, weight_column=weight)
            )
            binding = PartyBinding(party, role, path, store=folder / "stores" / party)
            runtimes[party] = PartyRuntime(
                binding, DictStore(), party_protocols(), disclose_errors=True, limits=limits
            )
        spec = JobSpec(
            job_id="fit",
            name=name,
            kind="vertical",
            parties=tuple(specs),
            model=model,
            crypto=crypto,
        )
        transport = InProcessTransport(runtimes)
        raise_for_errors(
            transport.hello(Envelope("job", "hello", COORDINATOR, "*", {"job": spec.to_json()}))
        )
        for runtime in runtimes.values():
            runtime.store.put_array(ALIGNED_ROWS_KEY, np.arange(len(x_bank)))
        mask = np.zeros(len(x_bank), dtype=bool) if test_mask is None else np.asarray(test_mask)
        runtimes["bank"].store.put_array(TEST_MASK_KEY, mask.astype(bool))
        try:
            yield InProcessJob(transport=transport, runtimes=runtimes, folder=folder, spec=spec)
        except BaseException:
            # As the driver does: every party closes its part of the failed job (``job/end``),
            # which drops, among others, its precomputed randomness.
            close_parties(transport, "failed")
            raise
