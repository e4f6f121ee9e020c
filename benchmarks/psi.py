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

Measured in the same run and printed with the PSI's wall and CPU time:

- **the X25519 bound**: the PSI's ``2 * (n_bank + n_platform)`` scalar multiplications alone,
  at the cost per multiplication of libsodium's C loop measured on all cores just before and
  just after the PSI, and the PSI's ratio to it (``ratio_to_bound``). ``wall_seconds`` is the
  bound on an idle machine (CPU time per multiplication / cores); on a busy machine also
  compare with ``wall_seconds_at_measured_rate`` and the CPU ratio, and read the load average
  printed beside them;
- **a phase table**: wall and CPU seconds (the whole process tree: the blinding workers too)
  of the shuffle, hashing and blinding, truncation, intersection, mapping to rows and the
  HMAC checks, and what the protocol code, stores and transport took besides;
- a salted-hash join (both parties
hash ``salt || id`` with SHA-256, the platform sends its hashes, the bank intersects). It is
**not** private: ids are public and enumerable, so the bank can invert every platform hash by
hashing all registered codes. It is the speed floor PSI is compared with.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib
import json
import os
import resource
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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
from models.alignment import protocol as alignment_protocol  # noqa: E402
from models.protocol import COORDINATOR, Envelope  # noqa: E402
from secure_agg import psi  # noqa: E402
from secure_agg.worker_pool import default_workers  # noqa: E402

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


#: The PSI's steps timed apart (wall and CPU-s of the whole process tree), by the function
#: that does them: ``(module, attribute, phase)``.
PHASES: tuple[tuple[Any, str, str], ...] = (
    (psi, "permutation", "shuffle (CSPRNG permutation)"),
    (psi, "encode_ids", "ids to bytes"),
    (psi, "hash_and_blind", "hash to curve + blind own ids"),
    (psi, "blind", "blind the peer's points"),
    (psi, "truncate", "truncate"),
    (psi, "match", "intersect (match)"),
    (alignment_protocol, "aligned_rows", "map to rows (canonical order)"),
    (alignment_protocol, "alignment_digest", "HMAC of aligned ids"),
)


class PhaseTimer:
    """Wall and CPU seconds spent inside the functions of :data:`PHASES` (outermost calls)."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._depth = 0

    def wrap(self, function: Callable[..., Any], phase: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1
                self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - wall0
                self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu_seconds() - cpu0

        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[PhaseTimer]:
        originals = [(module, name, getattr(module, name)) for module, name, _ in PHASES]
        try:
            for (module, name, function), (_, _, phase) in zip(originals, PHASES, strict=True):
                setattr(module, name, self.wrap(function, phase))
            yield self
        finally:
            for module, name, function in originals:
                setattr(module, name, function)

    def table(self, wall: float, cpu: float) -> dict[str, dict[str, float]]:
        """Per phase ``{wall, cpu}``, plus what the protocol code and transport took besides."""
        rows = {
            phase: {"wall": round(self.wall[phase], 3), "cpu": round(self.cpu[phase], 3)}
            for _, _, phase in PHASES
            if phase in self.wall
        }
        rows["other (protocol code, stores, transport)"] = {
            "wall": round(wall - sum(self.wall.values()), 3),
            "cpu": round(cpu - sum(self.cpu.values()), 3),
        }
        return rows


def x25519_rate(workers: int, per_worker: int = 20_000) -> dict[str, float]:
    """Scalar multiplications per second on ``workers`` cores at once, measured now.

    Each of ``workers`` threads runs ``per_worker`` X25519 multiplications in libsodium's C
    loop (:mod:`secure_agg._x25519_kernels`, which releases the GIL): the cost of the group
    operation alone, with nothing per point around it, under the machine's load of the moment.
    Without the kernel, one thread times libsodium through ctypes and the rate is scaled by
    ``workers``.
    """
    key = psi.BlindingKey.generate().secret_bytes()
    data = psi.hash_to_group([b"%d" % i for i in range(per_worker)]).tobytes()
    try:
        kernels = importlib.import_module("secure_agg._x25519_kernels")
    except ImportError:
        started, cpu0 = time.perf_counter(), time.thread_time()
        psi._blind_bytes(key, data)
        wall, cpu = time.perf_counter() - started, time.thread_time() - cpu0
        return {
            "ops_per_second": workers * per_worker / wall,
            "cpu_us_per_op": 1e6 * cpu / per_worker,
        }
    cpu_used = [0.0] * workers

    def run(index: int) -> None:
        cpu0 = time.thread_time()
        kernels.blind(key, data)
        cpu_used[index] = time.thread_time() - cpu0

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "ops_per_second": workers * per_worker / wall,
        "cpu_us_per_op": 1e6 * sum(cpu_used) / (workers * per_worker),
    }


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
    with PhaseTimer().installed() as phases:
        replies = run_protocol(
            transport, start_envelopes(spec.job_id, "bank", ["platform"], settings)
        )
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
        "phases": phases.table(wall, cpu),
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
        workers = default_workers()
        before = x25519_rate(workers)
        load_before = os.getloadavg()
        if args.runtime == "inprocess":
            result = run_inprocess(bank_path, platform_path)
        else:
            (folder / "job").mkdir()
            result = run_flower(bank_path, platform_path, folder / "job")
        load_after = os.getloadavg()
        after = x25519_rate(workers)
    bound = bound_of(args.n, n_platform, workers, before, after)
    bound["load_average"] = {"before": _rounded(load_before), "after": _rounded(load_after)}
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
        "x25519_bound": bound,
        "ratio_to_bound": ratios_to_bound(result, bound),
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
    print(report(summary))


def _rounded(load: tuple[float, float, float]) -> list[float]:
    return [round(x, 2) for x in load]


def bound_of(
    n_bank: int, n_platform: int, workers: int, before: dict[str, float], after: dict[str, float]
) -> dict[str, Any]:
    """What the PSI's scalar multiplications alone cost (each id is blinded twice).

    Two figures, from measurements just before and just after the PSI (their means):

    - ``wall_seconds``: ``ops * CPU time per op / workers``, the bound on an otherwise idle
      machine (CPU time per op hardly changes with load, so neither does this);
    - ``wall_seconds_at_measured_rate``: ``ops / (ops per second on all cores)``, the bound at
      the load of the moments measured (on a busy machine, a fairer yardstick for the PSI's
      wall time when the load stayed the same meanwhile).
    """
    ops = 2 * (n_bank + n_platform)
    rate = (before["ops_per_second"] + after["ops_per_second"]) / 2
    cpu_us = (before["cpu_us_per_op"] + after["cpu_us_per_op"]) / 2
    return {
        "scalar_mults": ops,
        "workers": workers,
        "cpu_us_per_op": round(cpu_us, 2),
        "cpu_seconds": round(ops * cpu_us / 1e6, 3),
        "wall_seconds": round(ops * cpu_us / 1e6 / workers, 3),
        "ops_per_second": {
            "before": round(before["ops_per_second"]),
            "after": round(after["ops_per_second"]),
        },
        "wall_seconds_at_measured_rate": round(ops / rate, 3),
    }


def ratios_to_bound(result: dict[str, Any], bound: dict[str, Any]) -> dict[str, float]:
    """The PSI's wall and CPU time over the bound's (1.0 would be nothing but X25519)."""
    ratios = {
        "wall": round(result["wall_seconds"] / bound["wall_seconds"], 3),
        "wall_at_measured_rate": round(
            result["wall_seconds"] / bound["wall_seconds_at_measured_rate"], 3
        ),
    }
    if result["cpu_seconds"] is not None:
        ratios["cpu"] = round(result["cpu_seconds"] / bound["cpu_seconds"], 3)
    if "align_stage_seconds" in result:  # Flower: the alignment without the runtime's start
        ratios["align_stage_wall"] = round(result["align_stage_seconds"] / bound["wall_seconds"], 3)
    return ratios


def report(summary: dict[str, Any]) -> str:
    """The human-readable lines: the bound, the measured wall, the ratios, the phase table."""
    bound, result, ratio = summary["x25519_bound"], summary["psi"], summary["ratio_to_bound"]
    cpu = result["cpu_seconds"]
    load = bound["load_average"]
    lines = [
        f"PSI {summary['n_bank']} x {summary['n_platform']} ids ({summary['runtime']}): "
        f"{result['wall_seconds']:.1f} s wall" + (f", {cpu:.1f} CPU-s" if cpu is not None else ""),
        f"X25519 bound, measured this run: {bound['scalar_mults']} scalar mults at "
        f"{bound['cpu_us_per_op']:.1f} us = {bound['cpu_seconds']:.1f} CPU-s, "
        f"{bound['wall_seconds']:.1f} s on {bound['workers']} cores "
        f"({bound['wall_seconds_at_measured_rate']:.1f} s at the all-core rate measured)",
        f"ratio to bound: wall {ratio['wall']:.2f}x "
        f"({ratio['wall_at_measured_rate']:.2f}x at the measured rate)"
        + (f", CPU {ratio['cpu']:.2f}x" if "cpu" in ratio else "")
        + (
            f", alignment stage alone {ratio['align_stage_wall']:.2f}x"
            if "align_stage_wall" in ratio
            else ""
        ),
        f"load average (1, 5, 15 min): before {load['before']}, after {load['after']}",
    ]
    phases = result.get("phases")
    if phases:
        width = max(len(name) for name in phases)
        lines.append(f"{'phase':<{width}}  {'wall s':>8}  {'CPU-s':>8}")
        lines += [
            f"{name:<{width}}  {row['wall']:>8.2f}  {row['cpu']:>8.2f}"
            for name, row in phases.items()
        ]
        lines.append(f"{'total':<{width}}  {result['wall_seconds']:>8.2f}  {cpu:>8.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
