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
short; the counts used are in the summary. These figures use the kernels the package picks (C
when ``secure_agg._gmp_kernels`` is built).

``compare_kernels`` then runs the operations that have C kernels twice, with the C kernels and
with the Python reference kernels (``paillier._C = None`` here, ``SECURE_AGG_KERNELS=python`` for
a freshly started worker pool), on one core and with ``workers=k`` (which means ``k`` threads of
this process with the C kernels, ``k`` worker processes with the Python ones), and reports the
rates side by side under ``"kernels"``: the key holder's CRT encryption, public DJN encryption,
re-randomisation, histogram multiplications of ``sum_groups_many`` (4 and 32 columns: the C
kernel switches method at ``_gmp_kernels.TABLE_MIN_COLS`` columns per process) and packing
inputs per second (150-bit values, no re-randomisation). ``--no-compare`` skips it.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from secure_agg import paillier, paillier_pool  # noqa: E402
from secure_agg.packing import GradientPacker, SumPacker  # noqa: E402
from secure_agg.paillier_pool import default_workers  # noqa: E402

#: SecureBoost defaults the capacity figure is computed for (logistic loss).
TYPICAL = {"g_bound": 1.0, "h_bound": 0.25, "precision_bits": 53, "max_rows": 30_000}

#: Columns and groups of the histogram-kernel measurement.
SUM_FEATURES = 16
SUM_GROUPS = 32

#: Column counts of the C-vs-Python histogram comparison (below and above the C kernel's
#: switch to per-row tables, also once split over two workers).
COMPARE_FEATURES = (4, 32)

#: Bits per packed value in the comparison (SecureBoost's typical sums).
PACK_BITS = 150


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _keys(key_bits: int) -> tuple[paillier.PublicKey, paillier.PrivateKey, float]:
    seconds, (pub, priv) = _timed(
        lambda: paillier.generate_keypair(key_bits, allow_insecure_test_keys=key_bits < 2048)
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


@contextlib.contextmanager
def kernel_mode(mode: str) -> Iterator[None]:
    """Run with the ``"c"`` or ``"python"`` kernels, here and in a freshly started pool."""
    saved_c, saved_env = paillier._C, os.environ.get(paillier.KERNELS_ENV)
    paillier.forget_private_tables()
    paillier_pool.shutdown()
    if mode == "python":
        paillier._C = None
        os.environ[paillier.KERNELS_ENV] = "python"
    elif saved_c is None:
        raise RuntimeError("the C kernels are not available")
    try:
        yield
    finally:
        paillier.forget_private_tables()
        paillier_pool.shutdown()
        paillier._C = saved_c
        if saved_env is None:
            os.environ.pop(paillier.KERNELS_ENV, None)
        else:
            os.environ[paillier.KERNELS_ENV] = saved_env


#: Timed runs per figure of the comparison; the fastest counts (the machine is shared).
REPEATS = 3


def _best(fn: Callable[[], Any], repeats: int = REPEATS) -> float:
    return min(_timed(fn)[0] for _ in range(repeats))


def kernel_rates(
    pub: paillier.PublicKey, priv: paillier.PrivateKey, n: int, workers: int, repeats: int = 1
) -> dict[str, float]:
    """Operations per second of the kernelled operations with ``workers`` processes.

    A first small call of every operation builds the tables (and starts the pool) untimed;
    each figure is the best of ``repeats`` runs.
    """
    plaintexts = _plaintexts(pub, n)
    cts = paillier.encrypt_many(pub, plaintexts, workers=1)
    packer = SumPacker(PACK_BITS, pub.key_bits)
    rng = np.random.default_rng(0)
    matrices = {f: rng.integers(0, SUM_GROUPS, size=(n, f)) for f in COMPARE_FEATURES}
    warm = max(2, workers)
    paillier.encrypt_many_private(priv, plaintexts[:warm], workers=workers)
    paillier.encrypt_many(pub, plaintexts[:warm], workers=workers)
    paillier.obfuscate_many(pub, cts[:warm], workers=workers)
    packer.pack(pub, cts[: warm * packer.capacity], workers=workers)

    out: dict[str, float] = {}
    seconds = _best(
        lambda: paillier.encrypt_many_private(priv, plaintexts, workers=workers), repeats
    )
    out["crt_encrypt"] = n / seconds
    seconds = _best(lambda: paillier.encrypt_many(pub, plaintexts, workers=workers), repeats)
    out["djn_encrypt"] = n / seconds
    n_obf = min(n, 600)
    seconds = _best(lambda: paillier.obfuscate_many(pub, cts[:n_obf], workers=workers), repeats)
    out["rerandomize"] = n_obf / seconds
    for features, matrix in matrices.items():
        seconds = _best(
            lambda m=matrix: paillier.sum_groups_many(pub, cts, m, SUM_GROUPS, workers=workers),
            repeats,
        )
        out[f"group_sum_mulmods_{features}_cols"] = matrix.size / seconds
    seconds = _best(lambda: packer.pack(pub, cts, rerandomize=False, workers=workers), repeats)
    out["pack_inputs"] = n / seconds
    return out


def compare_kernels(
    pub: paillier.PublicKey, priv: paillier.PrivateKey, n: int, workers: int
) -> dict[str, Any]:
    """C and Python kernel rates side by side, on one core and over ``workers`` processes.

    The two modes take turns :data:`REPEATS` times and each figure is the best of its turns,
    so that load from other processes on a shared machine falls on both alike.
    """
    report: dict[str, Any] = {
        "gmp": getattr(paillier._C, "GMP_VERSION", None),
        "adx_kernel": getattr(paillier._C, "ADX", None),
        "table_min_cols": getattr(paillier._C, "TABLE_MIN_COLS", None),
    }
    for label, count in (("one_core", 1), (f"{workers}_workers", workers)):
        runs: dict[str, list[dict[str, float]]] = {"c": [], "python": []}
        for _ in range(REPEATS):
            for mode in ("c", "python"):
                with kernel_mode(mode):
                    runs[mode].append(kernel_rates(pub, priv, n, count))
        rates = {mode: {k: max(r[k] for r in rs) for k in rs[0]} for mode, rs in runs.items()}
        report[label] = {
            name: {
                "c": round(rates["c"][name], 1),
                "python": round(rates["python"][name], 1),
                "speedup": round(rates["c"][name] / rates["python"][name], 2),
            }
            for name in rates["c"]
        }
    return report


def _print_comparison(report: dict[str, Any]) -> None:
    for label, rows in report.items():
        if not isinstance(rows, dict):
            continue
        print(f"\n{label:<34} {'C /s':>10} {'Python /s':>10} {'C/Py':>6}", file=sys.stderr)
        for name, row in rows.items():
            print(
                f"{name:<34} {row['c']:>10.0f} {row['python']:>10.0f} {row['speedup']:>6.2f}",
                file=sys.stderr,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2000, help="batch size per operation")
    parser.add_argument("--workers", type=int, default=None, help="default: all usable CPUs")
    parser.add_argument("--summary-json", type=Path, required=True)
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the C-vs-Python kernel comparison"
    )
    args = parser.parse_args()
    workers = args.workers or default_workers()

    pub, priv, keygen = _keys(args.key_bits)
    costs = measure_costs(args.key_bits, args.n, keys=(pub, priv))
    costs["keygen"] = keygen
    parallel, warmup = measure_parallel(pub, priv, args.n, workers)
    typical = GradientPacker(**TYPICAL, key_bits=args.key_bits)
    if args.no_compare:
        kernels: dict[str, Any] = {"skipped": "--no-compare"}
    elif paillier._C is None:
        kernels = {"skipped": "C kernels not built or disabled: Python kernels only"}
    else:
        kernels = compare_kernels(pub, priv, args.n, workers)
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
        "kernels": kernels,
        "machine": {
            "cpus": os.cpu_count(),
            "workers": workers,
            "python": platform.python_version(),
            "gmp": gmpy2.mp_version(),
            "c_kernels": paillier._C is not None,
        },
    }
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    _print_comparison(kernels)


if __name__ == "__main__":
    main()
