"""When Flower's embedded runtime itself fails (Ray not up in time), the job ends at once.

Seen on a loaded two-core machine: Ray's start timed out, Flower ended the simulation, but the
coordinator thread kept waiting for party nodes for the whole message timeout (an hour), so the
``lab`` process printed an internal error and never exited.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from federated import interrupt, simulation
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
    monkeypatch.setattr(simulation, "start_ray", lambda init_args: None)
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


class _FlakyRay:
    """Ray's ``init`` failing as a slow raylet makes it fail, a given number of times."""

    def __init__(self, failures: int, message: str) -> None:
        self.failures = failures
        self.message = message
        self.calls: list[dict[str, object]] = []

    def init(self, **kwargs: object) -> None:
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            raise Exception(self.message)  # what Ray raises

    def shutdown(self) -> None:
        pass


TIMEOUT = "The current node timed out during startup. This could happen because ..."


@pytest.mark.parametrize(("failures", "calls"), [(0, 1), (1, 2)])
def test_ray_is_started_again_when_its_node_timed_out(
    monkeypatch: pytest.MonkeyPatch, failures: int, calls: int
) -> None:
    import ray

    flaky = _FlakyRay(failures, TIMEOUT)
    monkeypatch.setattr(ray, "init", flaky.init)
    monkeypatch.setattr(ray, "shutdown", flaky.shutdown)
    simulation.start_ray({"num_cpus": 2})
    assert len(flaky.calls) == calls
    assert all(c["num_cpus"] == 2 and "runtime_env" in c for c in flaky.calls)


@pytest.mark.parametrize(
    ("failures", "message", "calls"),
    [(2, TIMEOUT, 2), (1, "Address already in use", 1)],
    ids=["timed-out-twice", "another-failure"],
)
def test_ray_start_gives_up_with_the_cause(
    monkeypatch: pytest.MonkeyPatch, failures: int, message: str, calls: int
) -> None:
    import ray

    flaky = _FlakyRay(failures, message)
    monkeypatch.setattr(ray, "init", flaky.init)
    monkeypatch.setattr(ray, "shutdown", flaky.shutdown)
    with pytest.raises(RuntimeError, match=rf"Ray did not start \({calls} attempts\): {message}"):
        simulation.start_ray({})
    assert len(flaky.calls) == calls
