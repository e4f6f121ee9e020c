"""Per-operation costs of the Paillier primitives (secure_agg.paillier / secure_agg.packing).

Usage::

    .venv/bin/python benchmarks/paillier_ops.py --key-bits 2048 --n 2000 \
        --summary-json out/paillier-ops.json

Reports operations per second on one core (``workers=1``) and over all usable CPUs for: naive
and DJN encryption, re-randomisation, ciphertext addition, multiplication by a constant, CRT
decryption, the ``sum_groups_many`` histogram kernel (with the raw gmpy2 multiply-mod rate for
comparison), and SumPacker packing; plus the packing capacity of typical SecureBoost settings.
One-time costs (key generation, building the fixed-base tables, starting the worker pool) are
measured separately and kept out of the per-operation figures.

``measure_costs(key_bits, n)`` returns seconds per operation on one core; other benchmarks
(e.g. SecureBoost's) import it to turn operation counts into lower bounds. Expensive operations
run on ``min(n, 200)`` (naive encryption) or ``min(n, 400)`` (decryption) items to keep runs
short; the counts used are in the summary.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from secure_agg import paillier  # noqa: E402
from secure_agg.packing import GradientPacker, SumPacker  # noqa: E402
from secure_agg.paillier_pool import default_workers  # noqa: E402

#: SecureBoost defaults the capacity figure is computed for (logistic loss).
TYPICAL = {"g_bound": 1.0, "h_bound": 0.25, "precision_bits": 53, "max_rows": 30_000}

#: Columns and groups of the histogram-kernel measurement.
SUM_FEATURES = 16
SUM_GROUPS = 32


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _keys(key_bits: int) -> tuple[paillier.PublicKey, paillier.PrivateKey, float]:
    seconds, (pub, priv) = _timed(
        lambda: paillier.generate_keypair(key_bits, allow_insecure=key_bits < 2048)
    )
    return pub, priv, seconds


def _plaintexts(pub: paillier.PublicKey, count: int) -> list[int]:
    return [secrets.randbelow(pub.n) for _ in range(count)]


def _raw_mulmod_seconds(pub: paillier.PublicKey, count: int) -> float:
    """Seconds per ``a * b % n²`` on gmpy2 integers in a bare loop: the kernel's floor."""
    n2 = gmpy2.mpz(pub.nsquare)
    a = gmpy2.mpz(secrets.randbelow(pub.nsquare))
    b = gmpy2.mpz(secrets.randbelow(pub.nsquare))
    started = time.perf_counter()
    for _ in range(count):
        a = a * b % n2
    return (time.perf_counter() - started) / count


def measure_costs(
    key_bits: int = 2048,
    n: int = 2000,
    *,
    keys: tuple[paillier.PublicKey, paillier.PrivateKey] | None = None,
) -> dict[str, float]:
    """Seconds per operation on one core (``workers=1``), after one-time set-up.

    Keys: ``encrypt`` (DJN), ``encrypt_naive``, ``obfuscate``, ``add``, ``mul_const`` (a signed
    64-bit constant), ``decrypt`` (CRT), ``sum_groups_add`` (one addition inside
    ``sum_groups_many``), ``raw_mulmod`` (bare gmpy2 multiply-mod), ``pack_per_ciphertext``
    (SumPacker at the typical 150-bit sums, without and ``_rerandomized`` with re-randomisation).
    Set-up costs: ``keygen``, ``table_build`` (this process's fixed-base tables).
    """
    if keys is None:
        pub, priv, keygen = _keys(key_bits)
    else:
        (pub, priv), keygen = keys, float("nan")
    costs: dict[str, float] = {"keygen": keygen}
    # One-time: the fixed-base tables (encryption rows, then re-randomisation rows).
    seconds, _ = _timed(lambda: (pub.encrypt_int(1), pub.obfuscate(pub.encrypt_int(1))))
    costs["table_build"] = seconds

    plaintexts = _plaintexts(pub, n)
    seconds, cts = _timed(lambda: paillier.encrypt_many(pub, plaintexts, workers=1))
    costs["encrypt"] = seconds / n
    n_naive = min(n, 200)
    seconds, _ = _timed(
        lambda: paillier.encrypt_many(pub, plaintexts[:n_naive], workers=1, method="naive")
    )
    costs["encrypt_naive"] = seconds / n_naive
    seconds, _ = _timed(lambda: paillier.obfuscate_many(pub, cts, workers=1))
    costs["obfuscate"] = seconds / n

    seconds, _ = _timed(lambda: [paillier.add(pub, a, b) for a, b in itertools.pairwise(cts)])
    costs["add"] = seconds / max(1, n - 1)
    constants = [secrets.randbits(64) - 2**63 for _ in cts]
    seconds, _ = _timed(
        lambda: [paillier.mul_const(pub, c, k) for c, k in zip(cts, constants, strict=True)]
    )
    costs["mul_const"] = seconds / n

    n_dec = min(n, 400)
    seconds, _ = _timed(lambda: paillier.decrypt_many(priv, cts[:n_dec], workers=1))
    costs["decrypt"] = seconds / n_dec

    groups = np.random.default_rng(0).integers(0, SUM_GROUPS, size=(n, SUM_FEATURES))
    seconds, _ = _timed(lambda: paillier.sum_groups_many(pub, cts, groups, SUM_GROUPS, workers=1))
    costs["sum_groups_add"] = seconds / groups.size
    costs["raw_mulmod"] = _raw_mulmod_seconds(pub, max(n, 5000))

    packer = SumPacker(GradientPacker(**TYPICAL, key_bits=pub.key_bits).bits_per_sum, key_bits)
    seconds, _ = _timed(lambda: packer.pack(pub, cts, rerandomize=False, workers=1))
    costs["pack_per_ciphertext"] = seconds / n
    seconds, _ = _timed(lambda: packer.pack(pub, cts, rerandomize=True, workers=1))
    costs["pack_per_ciphertext_rerandomized"] = seconds / n
    return costs


def measure_parallel(
    pub: paillier.PublicKey, priv: paillier.PrivateKey, n: int, workers: int
) -> tuple[dict[str, float], float]:
    """Operations per second over ``workers`` processes, and the seconds to start and warm them.

    Warming up starts the pool and builds every worker's tables (once per process and key).
    """
    warm = _plaintexts(pub, workers)
    started = time.perf_counter()
    warm_cts = paillier.encrypt_many(pub, warm, workers=workers)
    paillier.obfuscate_many(pub, warm_cts, workers=workers)
    paillier.decrypt_many(priv, warm_cts, workers=workers)
    warmup = time.perf_counter() - started

    plaintexts = _plaintexts(pub, n)
    seconds, cts = _timed(lambda: paillier.encrypt_many(pub, plaintexts, workers=workers))
    out = {"encrypt": n / seconds}
    n_dec = min(n, 400)
    seconds, _ = _timed(lambda: paillier.decrypt_many(priv, cts[:n_dec], workers=workers))
    out["decrypt"] = n_dec / seconds
    groups = np.random.default_rng(0).integers(0, SUM_GROUPS, size=(n, SUM_FEATURES))
    seconds, _ = _timed(
        lambda: paillier.sum_groups_many(pub, cts, groups, SUM_GROUPS, workers=workers)
    )
    out["sum_groups_add"] = groups.size / seconds
    packer = SumPacker(GradientPacker(**TYPICAL, key_bits=pub.key_bits).bits_per_sum, pub.key_bits)
    seconds, _ = _timed(lambda: packer.pack(pub, cts, workers=workers))
    out["pack_per_ciphertext_rerandomized"] = n / seconds
    return out, warmup


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2000, help="batch size per operation")
    parser.add_argument("--workers", type=int, default=None, help="default: all usable CPUs")
    parser.add_argument("--summary-json", type=Path, required=True)
    args = parser.parse_args()
    workers = args.workers or default_workers()

    pub, priv, keygen = _keys(args.key_bits)
    costs = measure_costs(args.key_bits, args.n, keys=(pub, priv))
    costs["keygen"] = keygen
    parallel, warmup = measure_parallel(pub, priv, args.n, workers)
    typical = GradientPacker(**TYPICAL, key_bits=args.key_bits)
    per_core = {
        name: round(1 / seconds, 1)
        for name, seconds in costs.items()
        if name not in ("keygen", "table_build")
    }
    summary = {
        "key_bits": args.key_bits,
        "n": args.n,
        "items": {"encrypt_naive": min(args.n, 200), "decrypt": min(args.n, 400)},
        "ops_per_second_one_core": per_core,
        f"ops_per_second_{workers}_workers": {k: round(v, 1) for k, v in parallel.items()},
        "speedups": {
            "djn_over_naive_encrypt": round(costs["encrypt_naive"] / costs["encrypt"], 1),
            "sum_groups_over_raw_mulmod": round(costs["raw_mulmod"] / costs["sum_groups_add"], 3),
        },
        "seconds_per_op": costs,
        "one_time_seconds": {
            "keygen": round(keygen, 3),
            "tables_this_process": round(costs["table_build"], 3),
            "pool_start_and_worker_tables": round(warmup, 3),
        },
        "packing": {
            "typical_settings": TYPICAL,
            "bits_per_sum": typical.bits_per_sum,
            "capacity": typical.sum_packer().capacity,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "workers": workers,
            "python": platform.python_version(),
            "gmp": gmpy2.mp_version(),
        },
    }
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
