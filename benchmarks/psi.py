"""Benchmark the PSI alignment against an (insecure) salted-hash join, both on this machine.

Usage::

    .venv/bin/python benchmarks/psi.py --n 1000000 --overlap 0.6 --summary-json out/psi-1m.json
    .venv/bin/python benchmarks/psi.py --n 50000 --n-platform 1000000 --overlap 0.9 \
        --summary-json out/psi-50k-1m.json
    .venv/bin/python benchmarks/psi.py --n 30000 --overlap 0.6 --runtime flower \
        --summary-json out/psi-flower.json

``--n`` is the bank's set size, ``--n-platform`` the platform's (default: ``--n``), ``--overlap``
the share of the bank's ids the platform also knows. ``--runtime inprocess`` (default) runs
both parties' real protocol code through the in-process transport in this process (their
blinding fans out to worker processes); ``--runtime flower`` runs ``lab align``'s job through
Flower's simulation runtime (Ray workers), including its start-up.

Reported beside the PSI figures, measured in the same run: a salted-hash join (both parties
hash ``salt || id`` with SHA-256, the platform sends its hashes, the bank intersects). It is
**not** private: ids are public and enumerable, so the bank can invert every platform hash by
hashing all registered codes. It is the speed floor PSI is compared with.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.safe_csv import write_csv  # noqa: E402
from federated.party import DictStore, PartyRuntime  # noqa: E402
from federated.protocols import party_protocols  # noqa: E402
from federated.spec import AlignmentSpec, JobSpec, PartyBinding, PartySpec  # noqa: E402
from federated.transport import InProcessTransport, run_protocol  # noqa: E402
from models.alignment import AlignmentSettings, conclude, start_envelopes  # noqa: E402
from models.protocol import COORDINATOR, Envelope  # noqa: E402

ALPHABET = np.array(list("0123456789ABCDEFGHJKLMNPQRTUWXY"))


def make_ids(
    n_bank: int, n_platform: int, overlap: float, seed: int
) -> tuple[list[str], list[str], int]:
    """Random 18-character code-like ids: ``overlap`` of the bank's ids are also the platform's."""
    common = round(n_bank * overlap)
    if common > n_platform:
        raise SystemExit(
            f"--overlap {overlap} needs {common} common ids > --n-platform {n_platform}"
        )
    total = n_bank + n_platform - common
    rng = np.random.default_rng(seed)
    numbers = rng.choice(31**12, size=total, replace=False)
    digits = np.empty((total, 16), dtype="<U1")
    digits[:, :4] = ALPHABET[rng.integers(0, 31, size=(total, 4))]
    value = numbers.copy()
    for col in range(15, 3, -1):
        digits[:, col] = ALPHABET[value % 31]
        value //= 31
    ids = np.char.add("91", np.array(["".join(row) for row in digits]))
    bank = ids[:n_bank]
    platform = np.concatenate([ids[:common], ids[n_bank:]])
    rng.shuffle(bank)
    rng.shuffle(platform)
    return bank.tolist(), platform.tolist(), common


def write_tables(folder: Path, bank: list[str], platform: list[str]) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    bank_path, platform_path = folder / "bank.csv", folder / "platform.csv"
    write_csv(pd.DataFrame({"id": bank, "y": rng.integers(0, 2, len(bank)), "x": 0.5}), bank_path)
    write_csv(pd.DataFrame({"id": platform, "z": 1.5}), platform_path)
    return bank_path, platform_path


def spec_for(min_intersection: int = 1) -> JobSpec:
    return JobSpec(
        job_id=secrets.token_hex(8),
        name="psi-benchmark",
        kind="vertical",
        parties=(PartySpec("bank", "bank", "id", "y"), PartySpec("platform", "platform", "id")),
        model={"type": "secureboost"},
        crypto={"key_bits": 2048},
        alignment=AlignmentSpec(reveal="both", id_scheme="text", min_intersection=min_intersection),
        task="align",
    )


def cpu_seconds() -> float:
    """CPU time of this process and every live descendant (the blinding workers) and reaped ones."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + reaped.ru_utime + reaped.ru_stime


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory: this process (both parties' state) and the largest worker."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = [0.0]
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            workers.append(child.memory_info().rss / 2**20)
    return {"parties_process_peak": round(own, 1), "largest_worker_now": round(max(workers), 1)}


def run_inprocess(bank_path: Path, platform_path: Path) -> dict[str, Any]:
    spec = spec_for()
    runtimes = {
        "bank": PartyRuntime(
            PartyBinding("bank", "bank", bank_path), DictStore(), party_protocols()
        ),
        "platform": PartyRuntime(
            PartyBinding("platform", "platform", platform_path), DictStore(), party_protocols()
        ),
    }
    transport = InProcessTransport(runtimes)
    # Loading and validating each party's table is the same in both methods: do it first.
    started = time.perf_counter()
    transport.hello(Envelope("job", "hello", COORDINATOR, "*", {"job": spec.to_json()}))
    load_seconds = time.perf_counter() - started
    before = transport.stats.copy()
    cpu0 = cpu_seconds()
    started = time.perf_counter()
    settings = AlignmentSettings(reveal="both", min_intersection=1)
    replies = run_protocol(transport, start_envelopes(spec.job_id, "bank", ["platform"], settings))
    outcome = conclude(replies, "bank", settings)
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu0
    traffic = transport.stats.since(before)
    sent = dict(traffic.uploaded)
    return {
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "bytes_sent": {**sent, "total": sum(sent.values())},
        "n_intersection": outcome.n_aligned,
        "hop_seconds": traffic.to_dict()["hop_seconds"],
        "table_load_seconds": round(load_seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
    }


def run_flower(bank_path: Path, platform_path: Path, workdir: Path) -> dict[str, Any]:
    from federated.simulation import run_embedded

    spec = spec_for()
    bindings = [
        PartyBinding("bank", "bank", bank_path),
        PartyBinding("platform", "platform", platform_path),
    ]
    started = time.perf_counter()
    result = run_embedded(spec, bindings, workdir)
    wall = time.perf_counter() - started
    alignment = result.alignment
    sent = dict(alignment["traffic"]["bytes_sent"])
    return {
        "wall_seconds": round(wall, 3),
        "align_stage_seconds": round(alignment["seconds"], 3),
        "runtime_start_and_hello_seconds": round(result.stage_seconds["connect"], 3),
        "cpu_seconds": None,
        "cpu_note": "party work runs in Ray worker processes outside this process tree",
        "bytes_sent": {**sent, "total": sum(sent.values())},
        "n_intersection": result.n_aligned,
        "hop_seconds": alignment["traffic"]["hop_seconds"],
    }


def salted_hash_join(bank: list[str], platform: list[str]) -> dict[str, Any]:
    """The insecure reference: shared-salt SHA-256 of ids; the platform sends its hashes."""
    cpu0 = cpu_seconds()
    started = time.perf_counter()
    salt = secrets.token_bytes(16)
    bank_hashes = np.frombuffer(
        b"".join(hashlib.sha256(salt + i.encode()).digest() for i in bank), dtype="V32"
    )
    platform_hashes = np.frombuffer(
        b"".join(hashlib.sha256(salt + i.encode()).digest() for i in platform), dtype="V32"
    )
    sent = platform_hashes.nbytes  # the platform's message to the bank
    matched = np.isin(bank_hashes, platform_hashes)
    return {
        "wall_seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(cpu_seconds() - cpu0, 3),
        "bytes_sent": {"platform": int(sent), "total": int(sent)},
        "n_intersection": int(matched.sum()),
        "private": False,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, required=True, help="bank ids")
    parser.add_argument("--n-platform", type=int, default=None, help="platform ids (default: --n)")
    parser.add_argument(
        "--overlap", type=float, required=True, help="share of bank ids the platform knows"
    )
    parser.add_argument("--summary-json", type=Path, required=True)
    parser.add_argument("--runtime", choices=("inprocess", "flower"), default="inprocess")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    n_platform = args.n_platform or args.n

    t = time.perf_counter()
    bank, platform, common = make_ids(args.n, n_platform, args.overlap, args.seed)
    with tempfile.TemporaryDirectory(prefix="psi-bench-") as tmp:
        folder = Path(tmp)
        bank_path, platform_path = write_tables(folder, bank, platform)
        setup = time.perf_counter() - t
        reference = salted_hash_join(bank, platform)
        if args.runtime == "inprocess":
            result = run_inprocess(bank_path, platform_path)
        else:
            (folder / "job").mkdir()
            result = run_flower(bank_path, platform_path, folder / "job")
    if result["n_intersection"] != common or reference["n_intersection"] != common:
        raise SystemExit(
            f"wrong intersection: PSI {result['n_intersection']}, reference "
            f"{reference['n_intersection']}, expected {common}"
        )
    summary = {
        "n_bank": args.n,
        "n_platform": n_platform,
        "overlap": args.overlap,
        "runtime": args.runtime,
        "wall_seconds": result["wall_seconds"],
        "cpu_seconds": result["cpu_seconds"],
        "bytes_sent": result["bytes_sent"],
        "n_intersection": result["n_intersection"],
        "psi": result,
        "salted_hash_reference": reference,
        "ratios_psi_over_reference": {
            "wall": round(result["wall_seconds"] / max(reference["wall_seconds"], 1e-9), 1),
            "bytes": round(result["bytes_sent"]["total"] / reference["bytes_sent"]["total"], 2),
            **(
                {"cpu": round(result["cpu_seconds"] / max(reference["cpu_seconds"], 1e-9), 1)}
                if result["cpu_seconds"] is not None
                else {}
            ),
        },
        "setup_seconds": round(setup, 3),
        "machine": {"cpus": os.cpu_count()},
    }
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
