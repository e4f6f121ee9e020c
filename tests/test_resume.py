"""Checkpoint and resume of vertical jobs through the in-process transport.

A job is cut at a chosen message (every later message fails, as with a dead process: no party
hears ``job/end``), then fresh party runtimes with empty state, on the same data and stores,
resume it; the model must equal an uninterrupted run's. The nodes' refusals (another spec,
changed data, a finished job) and the DP rules (a release is never made twice, a replay
cannot ask for other splits) are driven the way a curious peer would.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federated.driver import run_job
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import JobSpec, PartyBinding, PartySpec
from federated.transport import InProcessTransport, PartyError
from models.checkpoint import FORMAT, VERSION, PartyCheckpoints
from models.guard import NodeLimits
from models.protocol import Envelope
from tests.conftest import TEST_LIMITS, make_vertical

MODEL = {"type": "secureboost", "n_estimators": 4, "max_depth": 2, "max_bin": 8}
DP_MODEL = {**MODEL, "dp_epsilon": 20.0, "dp_delta": 1e-5}


class Crash(BaseException):
    """The process running the job died (a kill): nothing more is delivered."""


def _spec(job_id: str = "a1b2c3d4e5f60718", model: dict[str, Any] | None = None) -> JobSpec:
    return JobSpec(
        job_id=job_id,
        name="resume",
        kind="vertical",
        parties=(PartySpec("bank", "bank", "id", "y"), PartySpec("platform", "platform", "id")),
        model=model or MODEL,
        crypto={"key_bits": 512, "insecure_test_keys": True},
    )


def _transport(
    data: Path,
    stores: Path,
    tap: Callable[[str, Envelope], None] | None = None,
    limits: NodeLimits = TEST_LIMITS,
) -> InProcessTransport:
    paths = {"bank": data / "bank.csv", "platform": data / "platform.csv"}
    runtimes = {
        name: PartyRuntime(
            PartyBinding(name, name, paths[name], store=stores / name),  # type: ignore[arg-type]
            DictStore(),
            party_protocols(),  # type: ignore[arg-type]
            disclose_errors=True,
            limits=limits,
        )
        for name in ("bank", "platform")
    }
    return InProcessTransport(runtimes, tap=tap)


def _cut_at(stage: str, tree: int, level: int | None = None) -> Callable[[str, Envelope], None]:
    """A tap that kills the job once ``stage`` of ``tree`` (and ``level``) left a party."""
    dead = False

    def tap(direction: str, env: Envelope) -> None:
        nonlocal dead
        if dead:
            raise Crash("the job's process is gone")
        if (
            direction == "from_party"
            and env.protocol == "secureboost"
            and env.stage == stage
            and env.payload.get("tree") == tree
            and (level is None or env.payload.get("level") == level)
        ):
            dead = True
            raise Crash(f"killed after {stage} of tree {tree}")

    return tap


def _cut_after_bank_got(tree: int, level: int) -> Callable[[str, Envelope], None]:
    """A tap that kills the job right after the bank handled the histogram of (tree, level)."""
    state = {"armed": False, "dead": False}

    def tap(direction: str, env: Envelope) -> None:
        if state["dead"]:
            raise Crash("the job's process is gone")
        if direction != "to_party":
            return
        if state["armed"]:
            state["dead"] = True
            raise Crash(f"killed after the bank handled tree {tree} level {level}")
        if (
            env.recipient == "bank"
            and env.stage == "hist"
            and env.payload.get("tree") == tree
            and env.payload.get("level") == level
        ):
            state["armed"] = True

    return tap


def _model(stores: Path, result: Any) -> tuple[Any, Any]:
    details = result.joint.details
    bank = json.loads(Path(details["bank_part"]["path"]).read_text())
    [ref] = details["platform_parts"].values()
    platform = json.loads((stores / "platform" / "models" / f"{ref['model_id']}.json").read_text())
    return bank["trees"], platform["splits"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    make_vertical(folder, n=240)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    stores = tmp_path_factory.mktemp("whole")
    result = run_job(_spec(), _transport(data, stores))
    return (*_model(stores, result), result)


@pytest.mark.parametrize(
    ("stage", "tree", "level"),
    [("hist", 0, 0), ("hist", 2, 1), ("dirs", 1, 2), ("decisions", None, None)],
    ids=["first-tree", "mid-tree", "tree-end", "after-last-tree"],
)
def test_a_job_killed_mid_tree_resumes_to_the_uninterrupted_model(
    data: Path,
    tmp_path: Path,
    uninterrupted: tuple[Any, Any, Any],
    stage: str,
    tree: int | None,
    level: int | None,
) -> None:
    tap = _cut_at(stage, tree, level) if tree is not None else _cut_at_decisions()
    with pytest.raises(Crash):
        run_job(_spec(), _transport(data, tmp_path, tap))
    record = PartyCheckpoints(tmp_path / "bank" / "checkpoints" / _spec().job_id, "", "", "")
    assert (record.folder / "job.json").is_file()
    # New processes: empty state, same data and stores.
    result = run_job(_spec(), _transport(data, tmp_path), resume=True)
    trees, splits = _model(tmp_path, result)
    whole_trees, whole_splits, whole = uninterrupted
    assert trees == whole_trees
    assert splits == whole_splits
    ours = [t["train_logloss"] for t in result.joint.details["per_tree"]]
    theirs = [t["train_logloss"] for t in whole.joint.details["per_tree"]]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
    assert result.joint.report is not None
    assert whole.joint.report is not None
    assert abs(result.joint.report.auc - whole.joint.report.auc) < 1e-12
    # A finished job keeps only its record, marked finished; it cannot be resumed again.
    for party in ("bank", "platform"):
        folder = tmp_path / party / "checkpoints" / _spec().job_id
        assert sorted(p.name for p in folder.iterdir()) == ["job.json"]
        assert json.loads((folder / "job.json").read_text())["status"] == "finished"
    with pytest.raises(PartyError, match="finished"):
        run_job(_spec(), _transport(data, tmp_path), resume=True)


def _cut_at_decisions() -> Callable[[str, Envelope], None]:
    dead = False

    def tap(direction: str, env: Envelope) -> None:
        nonlocal dead
        if dead:
            raise Crash("gone")
        if direction == "to_party" and env.protocol == "secureboost" and env.stage == "predict":
            dead = True
            raise Crash("killed before the platform saved its part")

    return tap


def test_checkpoint_files_are_versioned_private_and_hold_no_key(data: Path, tmp_path: Path) -> None:
    with pytest.raises(Crash):
        run_job(_spec(), _transport(data, tmp_path, _cut_at("hist", 2, 0)))
    bank = tmp_path / "bank" / "checkpoints" / _spec().job_id
    platform = tmp_path / "platform" / "checkpoints" / _spec().job_id
    record = json.loads((bank / "job.json").read_text())
    assert record["format"] == FORMAT
    assert record["version"] == VERSION
    assert record["status"] == "running"
    assert record["data_digest"].startswith("sha256:")
    boundary = json.loads((bank / "secureboost-1.json").read_text())
    assert boundary["version"] == VERSION
    assert boundary["boundary"] == 1
    assert set(boundary["docs"]) >= {"sb.trees", "sb.metrics", "state", "rows"}
    # The newest two boundaries are kept, in each party's own folder.
    assert sorted(p.name for p in bank.glob("secureboost-*.json")) == [
        "secureboost-0.json",
        "secureboost-1.json",
    ]
    assert sorted(p.name for p in platform.glob("secureboost-*.json")) == [
        "secureboost-0.json",
        "secureboost-1.json",
    ]
    for path in [*bank.iterdir(), *platform.iterdir()]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        text = path.read_bytes()
        # Neither the bank's key pair nor a ciphertext is written at a boundary.
        for word in (b"sb.key", b"secret", b"private", b"public_key", b"sb.gh", b"lambda"):
            assert word not in text, (path, word)


def test_nodes_refuse_a_resume_of_another_spec_changed_data_or_no_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    with pytest.raises(Crash):
        run_job(_spec(), _transport(data, tmp_path, _cut_at("hist", 1, 0)))
    other = _spec(model={**MODEL, "n_estimators": 5})
    with pytest.raises(PartyError, match="job spec differs"):
        run_job(other, _transport(data, tmp_path), resume=True)
    with pytest.raises(PartyError, match="holds no checkpoint"):
        run_job(_spec("ffffffffffffffff"), _transport(data, tmp_path), resume=True)
    changed = tmp_path / "changed"
    changed.mkdir()
    for name in ("bank.csv", "platform.csv"):
        (changed / name).write_bytes((data / name).read_bytes())
    with (changed / "platform.csv").open("a") as fh:
        fh.write("E99999,A,0.5\n")
    with pytest.raises(PartyError, match="data file changed") as info:
        run_job(_spec(), _transport(changed, tmp_path), resume=True)
    assert info.value.party == "platform"
    # Refusals leave the checkpoints as they were: the right resume still works.
    run_job(_spec(), _transport(data, tmp_path), resume=True)


def test_a_dp_release_is_never_made_twice_and_is_counted_once(data: Path, tmp_path: Path) -> None:
    spec = _spec(model=DP_MODEL)
    seen: list[Envelope] = []
    cut = _cut_after_bank_got(1, 1)

    def tap(direction: str, env: Envelope) -> None:
        if direction == "from_party" and env.sender == "platform" and env.stage == "hist":
            seen.append(env)
        cut(direction, env)

    with pytest.raises(Crash):
        run_job(spec, _transport(data, tmp_path, tap))
    released_first = {(e.payload["tree"], e.payload["level"]) for e in seen if "sums" in e.payload}
    assert (1, 1) in released_first  # the cut came right after the bank handled this release
    replays: list[Envelope] = []

    def watch(direction: str, env: Envelope) -> None:
        if direction == "from_party" and env.sender == "platform" and env.stage == "hist":
            replays.append(env)

    result = run_job(spec, _transport(data, tmp_path, watch), resume=True)
    replayed = {(e.payload["tree"], e.payload["level"]) for e in replays if "replayed" in e.payload}
    fresh = {(e.payload["tree"], e.payload["level"]) for e in replays if "sums" in e.payload}
    # Tree 1 is replayed: its two released levels come back without a sum, nothing is redrawn.
    assert replayed == {(1, 0), (1, 1)}
    assert not fresh & released_first
    # The platform's count: every release once, exactly the plan of an uninterrupted job.
    report = result.nodes["platform"]
    [grant] = _grants(spec)
    assert report["releases"] == {grant.mechanism: len(released_first) + len(fresh)}
    assert sum(report["releases"].values()) <= grant.max_releases


def _grants(spec: JobSpec) -> Any:
    from federated.privacy_plan import dp_grants

    return dp_grants(spec, "platform")


def test_a_bank_replaying_a_tree_gets_no_fresh_noise_and_cannot_ask_other_splits(
    data: Path, tmp_path: Path
) -> None:
    spec = _spec(model=DP_MODEL)
    with pytest.raises(Crash):
        run_job(spec, _transport(data, tmp_path, _cut_after_bank_got(2, 1)))
    # A curious bank "resumes" and asks for tree 2's level-1 histogram with other row positions
    # (other splits) than it asked before the interruption.
    tampered = {"done": False}

    def tamper(direction: str, env: Envelope) -> None:
        if (
            direction == "to_party"
            and env.stage == "level"
            and env.payload.get("tree") == 2
            and not tampered["done"]
        ):
            position = env.payload["position"]
            assert isinstance(position, np.ndarray)
            position[: position.size // 2] = 1 - np.clip(position[: position.size // 2], 0, 1)
            tampered["done"] = True

    with pytest.raises(PartyError, match="replays the exchange it made") as info:
        run_job(spec, _transport(data, tmp_path, tamper), resume=True)
    assert info.value.party == "platform"
    # Resuming again and again: the replayed level never carries sums, and the count of
    # releases the platform made does not move.
    counts = []
    for _ in range(2):
        got: list[Envelope] = []
        cut = _cut_after_bank_got(2, 1)

        def keep(
            direction: str,
            env: Envelope,
            got: list[Envelope] = got,
            cut: Callable[[str, Envelope], None] = cut,
        ) -> None:
            if direction == "from_party" and env.stage == "hist" and env.payload.get("tree") == 2:
                got.append(env)
            cut(direction, env)

        with pytest.raises(Crash):
            run_job(spec, _transport(data, tmp_path, keep), resume=True)
        assert [e.payload.get("replayed") for e in got] == [True, True]
        record = json.loads(
            (tmp_path / "platform" / "checkpoints" / spec.job_id / "job.json").read_text()
        )
        counts.append(record["releases"])
    assert counts[0] == counts[1]


# ----------------------------------------------------------------------------- hetero LR

LR_MODEL = {"type": "hetero_lr", "batch_size": 128, "max_epochs": 4, "tol": 0.0, "max_bin": 8}
LR_LIMITS = NodeLimits(
    min_key_bits=512, allow_insecure_test_keys=True, min_batch_size=64, rows_per_cross_term=1
)


def _lr_transport(
    data: Path, stores: Path, tap: Callable[[str, Envelope], None] | None = None
) -> InProcessTransport:
    return _transport(data, stores, tap, limits=LR_LIMITS)


def _lr_parts(result: Any, stores: Path) -> tuple[Any, Any]:
    details = result.joint.details
    bank = json.loads(Path(details["bank_part"]["path"]).read_text())
    [ref] = details["platform_parts"].values()
    platform = json.loads((stores / "platform" / "models" / f"{ref['model_id']}.json").read_text())
    return bank, platform


def test_a_hetero_lr_job_killed_mid_epoch_resumes_to_the_uninterrupted_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.vertical_lr import batch_seed

    # The batch schedule's seed is drawn afresh by every run; the whole run and the cut one
    # draw the same here, so they train on the same batches. The resumed run draws new values
    # (its setup runs again) and must continue with the seed its parties checkpointed.
    draws = iter(f"{i:064x}" for i in range(1000))
    monkeypatch.setattr(batch_seed, "draw", lambda: next(draws))
    data = tmp_path / "data"
    make_vertical(data, n=600)
    spec = _spec(model=LR_MODEL)
    whole = run_job(spec, _lr_transport(data, tmp_path / "whole"))
    draws = iter(f"{i:064x}" for i in range(1000))
    dead = {"seen": False}

    def tap(direction: str, env: Envelope) -> None:
        if dead["seen"]:
            raise Crash("gone")
        if (
            direction == "from_party"
            and env.stage == "cross_sums"
            and (env.payload.get("epoch"), env.payload.get("batch")) == (2, 1)
        ):
            dead["seen"] = True
            raise Crash("killed mid-epoch 2")

    stores = tmp_path / "cut"
    with pytest.raises(Crash):
        run_job(spec, _lr_transport(data, stores, tap))
    held = sorted(p.name for p in (stores / "bank" / "checkpoints" / spec.job_id).glob("*.json"))
    assert held == ["hetero_lr-0.json", "hetero_lr-1.json", "job.json"]
    resumed = run_job(spec, _lr_transport(data, stores), resume=True)
    bank, platform = _lr_parts(resumed, stores)
    whole_bank, whole_platform = _lr_parts(whole, tmp_path / "whole")
    assert bank["tables"] == whole_bank["tables"]
    assert platform["mappings"] == whole_platform["mappings"]
    names = sorted(whole_bank["coefficients"])
    assert sorted(bank["coefficients"]) == names
    np.testing.assert_allclose(
        [bank["coefficients"][n] for n in names],
        [whole_bank["coefficients"][n] for n in names],
        rtol=0,
        atol=1e-9,
    )
    np.testing.assert_allclose(bank["intercept"], whole_bank["intercept"], rtol=0, atol=1e-9)
    assert [h["epoch"] for h in resumed.joint.details["history"]] == [0, 1, 2, 3]
    assert resumed.joint.report is not None
    assert whole.joint.report is not None
    assert abs(resumed.joint.report.auc - whole.joint.report.auc) < 1e-9


def test_a_job_with_early_stopping_resumes_to_the_uninterrupted_model(
    data: Path, tmp_path: Path
) -> None:
    """The early-stopping state (validation scores, best tree) is part of the checkpoint."""
    model = {**MODEL, "n_estimators": 6, "validation_fraction": 0.25, "early_stopping_rounds": 2}
    spec = _spec(model=model)
    whole_stores = tmp_path / "whole"
    whole = run_job(spec, _transport(data, whole_stores))
    stores = tmp_path / "cut"
    with pytest.raises(Crash):
        run_job(spec, _transport(data, stores, _cut_at("hist", 2, 1)))
    resumed = run_job(spec, _transport(data, stores), resume=True)
    assert _model(stores, resumed) == _model(whole_stores, whole)
    for key in ("best_iteration", "best_score", "iterations_trained", "iterations_kept"):
        assert resumed.joint.details["validation"].get(key) == whole.joint.details[
            "validation"
        ].get(key), key
