"""When Flower's embedded runtime itself fails (Ray not up in time), the job ends at once.

Seen on a loaded two-core machine: Ray's start timed out, Flower ended the simulation, but the
coordinator thread kept waiting for party nodes for the whole message timeout (an hour), so the
``lab`` process printed an internal error and never exited.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from federated import interrupt
from federated.flower_transport import FlowerTransport
from federated.interrupt import JobInterruptedError
from federated.simulation import JobFailedError, run_embedded
from federated.spec import JobSpec, PartyBinding, PartySpec
from models.protocol import ANY_PARTY, COORDINATOR, Envelope


class _NoNodes:
    """A grid no party node ever connects to."""

    def get_node_ids(self) -> list[int]:
        return []


def test_waiting_for_party_nodes_ends_on_a_stop_request() -> None:
    transport = FlowerTransport(_NoNodes(), 2, timeout=3600.0)  # type: ignore[arg-type]
    interrupt.request_stop()
    try:
        with pytest.raises(JobInterruptedError):
            transport.hello(Envelope("job", "hello", COORDINATOR, ANY_PARTY))
    finally:
        interrupt.reset()


def test_a_runtime_that_fails_to_start_fails_the_job_and_stops_the_coordinator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    flower = importlib.import_module("flwr.simulation.run_simulation")

    def crashed(**kwargs: object) -> None:
        try:
            raise TimeoutError("The current node timed out during startup.")
        except TimeoutError as exc:
            raise RuntimeError("An error was encountered. Ending simulation.") from exc

    monkeypatch.setattr(flower, "_run_simulation", crashed)
    spec = JobSpec(
        job_id="j1",
        name="crash",
        kind="vertical",
        parties=(PartySpec("bank", "bank", "id", "y"), PartySpec("platform", "platform", "id")),
        model={"type": "secureboost"},
        crypto={},
    )
    bindings = [
        PartyBinding("bank", "bank", tmp_path / "b.csv"),
        PartyBinding("platform", "platform", tmp_path / "p.csv"),
    ]
    try:
        with pytest.raises(
            JobFailedError, match=r"timed out during startup\.\); nothing was registered"
        ):
            run_embedded(spec, bindings, tmp_path)
        assert interrupt.stop_requested()  # the coordinator thread stops at its next poll
    finally:
        interrupt.reset()
