"""A party's compute backend: its local workers or a Ray cluster of its own, named by its policy.

The slow tests start a real two-node Ray cluster on loopback (:class:`LocalRayCluster`, one
CPU per node, shared by the module) and run real jobs through real nodes
(:class:`PartyRuntime` with the lab's node policy reading each party's own home): the model
and the alignment must be exactly those of the local backend, and the work must really have
run as Ray tasks on both nodes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federated.driver import run_job
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.result import JobResult
from federated.spec import AlignmentSpec, JobSpec, PartyBinding, PartySpec
from federated.transport import InProcessTransport, PartyError
from lab.cli import run as run_lab_in_process
from lab.config import NODE_POLICY
from lab.governance.audit import AuditLog
from lab.governance.errors import PolicyFileError
from lab.governance.policy import read_policy, set_policy
from models.alignment import ALIGNED_ROWS_KEY
from models.guard import NodeLimits
from secure_agg import compute, paillier, psi, ray_backend
from secure_agg.compute import ComputeSettings
from secure_agg.ray_local import LocalRayCluster, free_port, other_interfaces
from tests.conftest import EXPERIMENTS, TEST_KEY_POLICY, make_vertical

TEST_KEYS = {"key_bits": 1024, "insecure_test_keys": True}


# ---------------------------------------------------------------- the policy names the backend


def test_the_backend_is_the_nodes_own_policy_setting(lab_home: Path) -> None:
    assert read_policy(lab_home).limits().compute == compute.LOCAL
    policy = set_policy(
        ["compute.backend=ray", "compute.address=127.0.0.1:6379", "compute.cpus=4"], lab_home
    )
    settings = policy.limits().compute
    assert settings == ComputeSettings(backend="ray", address="127.0.0.1:6379", cpus=4)
    limits = policy.limits()
    assert NodeLimits.from_dict(json.loads(json.dumps(limits.to_dict()))) == limits


@pytest.mark.parametrize(
    ("assignments", "named"),
    [
        (["compute.backend=ray"], "compute.address"),
        (["compute.backend=ray", "compute.address=no-port"], "'no-port' is not host:port"),
        (["compute.address=127.0.0.1:6379"], "compute.backend"),
        (["compute.cpus=0"], "cpus"),
        (["compute.backend=spark"], "backend"),
    ],
)
def test_a_bad_compute_section_is_refused_naming_the_key(
    lab_home: Path, assignments: list[str], named: str
) -> None:
    with pytest.raises(PolicyFileError, match=named):
        set_policy(assignments, lab_home)
    assert read_policy(lab_home).compute.backend == "local"  # the file is left unchanged


def test_a_job_spec_cannot_choose_the_backend(tmp_path: Path, lab_home: Path) -> None:
    """A spec that carries a ``compute`` entry is read without it; the node's policy decides."""
    transport, _ = _pair(tmp_path, lab_home, 200)
    raw = json.loads(_spec(task="align").to_json())
    raw["compute"] = {"backend": "ray", "address": "10.0.0.1:6379"}
    spec = JobSpec.from_json(json.dumps(raw))
    assert "compute" not in json.loads(spec.to_json())
    result = run_job(spec, transport)
    assert result.n_aligned == 200
    for runtime in transport.parties.values():
        assert runtime.compute_settings() == compute.LOCAL


def test_an_unreachable_cluster_fails_at_hello_naming_the_address_and_leaves_nothing(
    tmp_path: Path, lab_home: Path
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    transport, homes = _pair(tmp_path, lab_home, 200, platform_compute=address)
    with pytest.raises(PartyError) as caught:
        run_job(_spec(task="align"), transport)
    message = str(caught.value)
    assert caught.value.party == "platform"
    assert address in message
    assert "ray start --head" in message
    assert "compute.address" in message
    assert ray_backend.running() == []  # no gateway process left behind
    for home in homes.values():  # nothing reserved, no journal of an open job
        journal = home / "node-jobs"
        assert not journal.exists() or not any(journal.glob("*.json"))
    log = AuditLog(homes["platform"] / "audit" / "log.jsonl")
    assert list(log.entries("job_served")) == []
    # The node audits its refusal in its own log, naming the cluster it could not reach.
    [refused] = list(log.entries("job_refused"))
    assert refused.payload["party"] == "platform"
    assert address in refused.payload["reason"]
    assert "compute backend" in refused.payload["reason"]


# ---------------------------------------------------------------- on a two-node Ray cluster


#: Set in the private network namespace the cluster's tests run in (below).
IN_NETNS = os.environ.get("LAB_TEST_RAY_NETNS") == "1"


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    """A 2-node cluster, started only inside a network namespace of its own.

    Ray 2.55's GCS, raylets and workers bind every interface whatever ``--node-ip-address``
    says; in a namespace whose only interface is loopback, nothing they open is reachable
    from another host (or from this host's other namespaces).
    """
    if not IN_NETNS:
        pytest.skip("run inside its own network namespace by test_cluster_tests_in_a_netns")
    assert other_interfaces() == []
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with LocalRayCluster(nodes=2, cpus_per_node=1) as running:
        yield running
    ray_backend.shutdown()


@pytest.mark.slow
@pytest.mark.skipif(IN_NETNS, reason="the outer run's test")
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare for a private network namespace",
)
def test_cluster_tests_in_a_netns(tmp_path: Path) -> None:
    """Run this module's cluster tests in a new network namespace with only loopback up."""
    command = [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        sys.executable,
        "-m",
        "pytest",
        __file__,
        "-m",
        "slow",
        "-q",
        "-p",
        "no:cacheprovider",
        "--basetemp",
        str(tmp_path / "inner"),
    ]
    env = {**os.environ, "LAB_TEST_RAY_NETNS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "6 passed" in done.stdout, done.stdout[-3000:]


@pytest.mark.slow
def test_secureboost_on_the_ray_backend_equals_the_local_backend(
    cluster: LocalRayCluster, tmp_path: Path, lab_home: Path
) -> None:
    model = {"type": "secureboost", "n_estimators": 2, "max_depth": 2, "max_bin": 8}
    spec = _spec(model=model)
    # Rows x platform columns above the size from which histogram sums are spread
    # (THREAD_MIN_ADDS), so that they, the packing and the decryption leave the process.
    n = 6_000
    local, _ = _pair(tmp_path / "local", lab_home / "local", n)
    reference = run_job(spec, local)
    remote, _ = _pair(tmp_path / "ray", lab_home / "ray", n, compute=cluster.address)
    before = _counts(cluster)
    result = run_job(spec, remote)
    after = _counts(cluster)

    assert result.joint.status == reference.joint.status == "trained"
    assert _trees(result) == _trees(reference)
    assert result.joint.report is not None
    assert reference.joint.report is not None
    assert result.joint.report.to_dict() == reference.joint.report.to_dict()
    # The same splits, thresholds and leaf values, at both parties.
    for party in ("bank", "platform"):
        assert _part(tmp_path / "ray", party) == _part(tmp_path / "local", party)
    # The batches really ran as Ray tasks, on both nodes of the cluster.
    assert after["tasks"] > before["tasks"]
    assert len(after["nodes"]) == 2


@pytest.mark.slow
def test_a_level_ships_its_node_slots_not_the_bins_and_ciphertexts_again(
    cluster: LocalRayCluster,
) -> None:
    pub, priv = paillier.generate_keypair(1024, allow_insecure_test_keys=True)
    rng = np.random.default_rng(5)
    rows, cols, width = 4_000, 24, 9
    bins = rng.integers(0, width, size=(rows, cols)).astype(np.int32)
    cts = paillier.encrypt_many_private(priv, [secrets.randbelow(1 << 20) for _ in range(rows)])
    with compute.using(cluster.settings()):
        gateway = compute.gateway()
        for nodes in (1, 2, 4):  # three levels of one tree
            slots = rng.integers(-1, nodes, size=rows).astype(np.int32)
            groups = (bins + slots[:, None] * width).astype(np.int32)
            groups[slots < 0] = -1
            before = gateway.counts()
            remote = paillier.sum_binned_many(pub, cts, bins, slots, width, nodes * width)
            after = gateway.counts()
            with compute.using(ComputeSettings()):
                local = paillier.sum_groups_many(pub, cts, groups, nodes * width)
            assert remote == local
            assert int(after["tasks"]) - int(before["tasks"]) == 2  # one part per CPU
            uploaded = int(after["uploaded_bytes"]) - int(before["uploaded_bytes"])
            if nodes == 1:
                # The tree's ciphertexts and the job's bins (one byte per bin) go once ...
                assert uploaded >= rows * pub.ciphertext_bytes + rows * cols
            else:
                assert uploaded == 0  # ... and a level sends only its rows' slots.


@pytest.mark.slow
def test_psi_on_the_ray_backend_gives_the_same_blinding_and_alignment(
    cluster: LocalRayCluster, tmp_path: Path, lab_home: Path
) -> None:
    n = psi.PARALLEL_THRESHOLD + 5_000  # large enough to be spread over the workers
    ids = [secrets.token_bytes(8) for _ in range(n)]
    key = psi.BlindingKey.generate()
    local = psi.hash_and_blind(ids, key)
    with compute.using(cluster.settings()):
        before = _counts(cluster)["tasks"]
        remote = psi.hash_and_blind(ids, key)
        assert _counts(cluster)["tasks"] > before
        assert np.array_equal(psi.blind(remote, key), psi.blind(local, key))
    assert np.array_equal(remote, local)

    spec = _spec(task="align")
    aligned: dict[str, set[str]] = {}
    for name, address in (("local", None), ("ray", cluster.address)):
        transport, _ = _pair(tmp_path / name, lab_home / name, n, compute=address)
        result = run_job(spec, transport)
        assert result.n_aligned == n
        aligned[name] = _aligned_ids(transport)
    assert aligned["ray"] == aligned["local"]


@pytest.mark.slow
def test_a_refused_input_on_a_ray_worker_names_the_item(cluster: LocalRayCluster) -> None:
    points = np.frombuffer(secrets.token_bytes(32 * 25_000), dtype=np.uint8).reshape(-1, 32)
    points = points.copy()
    points[21_000] = 0  # a low-order point (the neutral element)
    with compute.using(cluster.settings()), pytest.raises(psi.LowOrderPointError) as caught:
        psi.blind(points, psi.BlindingKey.generate())
    assert caught.value.index == 21_000


@pytest.mark.slow
def test_a_job_through_flower_runs_on_the_cluster_and_trains_the_local_model(
    cluster: LocalRayCluster, tmp_path: Path, lab_home: Path
) -> None:
    """``lab train`` through Flower's simulation runtime: the nodes' own policy names the cluster.

    Each party's ClientApp (a Ray actor of Flower's own cluster) starts its gateway to the
    party's cluster; the model equals the one the local backend trains.
    """
    summaries = {}
    for backend in ("local", "ray"):
        if backend == "ray":
            setting = ["compute.backend=ray", f"compute.address={cluster.address}"]
        else:
            setting = ["compute.backend=local"]
        set_policy([*TEST_KEY_POLICY, *setting], lab_home)
        before = cluster.drivers()
        path = tmp_path / f"{backend}.json"
        code = run_lab_in_process(
            [
                "train",
                str(EXPERIMENTS / "breast_secureboost.yaml"),
                "--set",
                "crypto.key_bits=1024",
                "--set",
                "crypto.insecure_test_keys=true",
                "--summary-json",
                str(path),
            ]
        )
        assert code == 0
        summaries[backend] = json.loads(path.read_text())
        connected = cluster.drivers() - before
        if backend == "ray":
            assert connected >= 2  # the bank's gateway and the platform's
        else:
            assert connected == 0
    ray_run, local_run = summaries["ray"], summaries["local"]
    assert ray_run["joint_model"]["status"] == local_run["joint_model"]["status"] == "trained"
    assert ray_run["metrics"] == local_run["metrics"]
    assert ray_run["timing"]["trees"] == local_run["timing"]["trees"]


@pytest.mark.slow
def test_the_nodes_share_the_callers_scheduling_group(cluster: LocalRayCluster) -> None:
    """Each node has a process group of its own (stopped as one) in the caller's session.

    Linux schedules a session as one group (autogroup): a cluster in a session of its own would
    take half the CPU against the caller's processes, so the parties' lowest-priority threads
    (precomputed randomness) would compete with its tasks as equals.
    """
    for pid in cluster.pids:
        assert os.getpgid(pid) == pid
        assert os.getsid(pid) == os.getsid(0)


# ---------------------------------------------------------------- helpers


def _spec(*, model: dict[str, Any] | None = None, task: str = "train") -> JobSpec:
    return JobSpec(
        job_id=f"job{secrets.randbelow(1 << 30)}",
        name="compute",
        kind="vertical",
        parties=(PartySpec("bank", "bank", "id", "y"), PartySpec("platform", "platform", "id")),
        model=model or {"type": "secureboost", "n_estimators": 1, "max_depth": 2, "max_bin": 8},
        crypto=dict(TEST_KEYS),
        alignment=AlignmentSpec(id_scheme="text", min_intersection=10),
        task=task,  # type: ignore[arg-type]
    )


def _home(home: Path, address: str | None) -> Path:
    assignments = [*TEST_KEY_POLICY, "unpublished=serve"]
    if address is not None:
        assignments += ["compute.backend=ray", f"compute.address={address}"]
    set_policy(assignments, home, actor="test")
    return home


def _pair(
    tmp_path: Path,
    home: Path,
    n: int,
    *,
    compute: str | None = None,
    platform_compute: str | None = None,
) -> tuple[InProcessTransport, dict[str, Path]]:
    bank_file, platform_file = make_vertical(tmp_path / "data", n=n)
    homes = {
        "bank": _home(home / "bank", compute),
        "platform": _home(home / "platform", platform_compute or compute),
    }
    files = {"bank": bank_file, "platform": platform_file}
    runtimes = {
        name: PartyRuntime(
            PartyBinding(
                name,
                name,  # type: ignore[arg-type]
                files[name],
                store=tmp_path / name,
                policy=NODE_POLICY,
                governance_home=homes[name],
            ),
            DictStore(),
            party_protocols(),
            disclose_errors=True,
        )
        for name in ("bank", "platform")
    }
    return InProcessTransport(runtimes), homes  # type: ignore[arg-type]


def _counts(cluster: LocalRayCluster) -> dict[str, Any]:
    """What this process's gateways ran so far (a node closes them at the end of a job)."""
    return ray_backend.totals()


def _aligned_ids(transport: InProcessTransport) -> set[str]:
    bank: PartyRuntime = transport.parties["bank"]  # type: ignore[assignment]
    rows = bank.store.get_array(ALIGNED_ROWS_KEY)
    return {str(i) for i in bank.table().ids[rows]}


def _trees(result: JobResult) -> list[dict[str, Any]]:
    """Each tree's leaves, test AUC and training loss (not its timings)."""
    keys = ("tree", "leaves", "test_auc", "train_logloss")
    return [{k: tree[k] for k in keys} for tree in result.joint.details["per_tree"]]


def _part(folder: Path, party: str) -> dict[str, Any]:
    """The model part ``party`` stored: its trees or splits, bins and scores (not its id)."""
    [path] = (folder / party / "models").glob("*.json")
    part: dict[str, Any] = json.loads(path.read_text())
    for key in ("model_id", "platform_parts"):
        part.pop(key, None)
    return part
