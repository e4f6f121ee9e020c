"""Paillier (DJN) against Okamoto–Uchiyama: per-operation costs at the same modulus length.

Usage::

    .venv/bin/python benchmarks/he_schemes.py --key-bits 2048 --n 1000 \
        --summary-json out/he-schemes.json

Measures, in one run on one core (Paillier with ``workers=1``), microseconds per operation for:
encryption of a 150-bit plaintext (a SecureBoost row) and of the largest plaintext of each
scheme, homomorphic addition, multiplication by a 53-bit constant, the histogram kernel
(``sum_groups_many``, 16 columns x 32 groups, per multiplication), re-randomisation with the
key's base (``obfuscate_us``) and with the sender's own randomness (``rerandomize_own_us``, what a
platform returns to the key holder) and decryption; plus the ciphertext width and, for
SecureBoost's packed sums (150 bits each, :mod:`secure_agg.packing`), the sums per ciphertext,
bytes per sum and decryption time per sum.
Ratios are Paillier / OU (above 1: OU is faster or smaller).

Both schemes run with the C kernels (when ``secure_agg._gmp_kernels`` is built) and again with
their Python reference kernels, and are compared like for like. OU's C kernels cover encryption
and re-randomisation; its decryption, addition, mul_const and group sums are gmpy2 in both.
One-time costs (key generation, fixed-base tables) are kept out: every timed operation runs once
untimed first so that the tables are built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from secure_agg import ou, paillier  # noqa: E402
from secure_agg.packing import HEADROOM_BITS  # noqa: E402

#: Bits of a SecureBoost row plaintext and of one packed histogram sum (typical settings).
ROW_BITS = 150
#: Bits of the constant of mul_const (a float64 mantissa).
CONST_BITS = 53
#: Shape of the histogram measurement.
SUM_ROWS, SUM_FEATURES, SUM_GROUPS = 200, 16, 32


def _per_op(fn: Callable[[], Any], count: int) -> float:
    """Microseconds per item of ``fn`` (which handles ``count`` items), after one warm-up."""
    fn()
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) / count * 1e6


@contextmanager
def _kernels(use_c: bool) -> Iterator[None]:
    """Run with the C kernels (as built) or the Python reference kernels of both schemes."""
    saved = paillier.extension.active()
    paillier.extension.use(saved if use_c else None)
    try:
        yield
    finally:
        paillier.extension.use(saved)


def _paillier_costs(key_bits: int, n: int, use_c: bool) -> dict[str, float]:
    pub, priv = paillier.generate_keypair(key_bits, allow_insecure_test_keys=key_bits < 2048)
    small = [secrets.randbits(ROW_BITS) for _ in range(n)]
    large = [secrets.randbelow(pub.n) for _ in range(n)]
    k = secrets.randbits(CONST_BITS)
    with _kernels(use_c):
        cts = paillier.encrypt_many(pub, small, workers=1)
        matrix = np.random.default_rng(0).integers(0, SUM_GROUPS, (SUM_ROWS, SUM_FEATURES))
        n_dec = min(n, 300)
        return {
            "encrypt_150bit_us": _per_op(lambda: paillier.encrypt_many(pub, small, workers=1), n),
            "encrypt_max_us": _per_op(lambda: paillier.encrypt_many(pub, large, workers=1), n),
            "add_us": _per_op(lambda: [paillier.add(pub, c, cts[0]) for c in cts], n),
            "mul_const_us": _per_op(lambda: [paillier.mul_const(pub, c, k) for c in cts], n),
            "sum_groups_per_mul_us": _per_op(
                lambda: paillier.sum_groups_many(
                    pub, cts[:SUM_ROWS], matrix, SUM_GROUPS, workers=1
                ),
                SUM_ROWS * SUM_FEATURES,
            ),
            "obfuscate_us": _per_op(lambda: paillier.obfuscate_many(pub, cts, workers=1), n),
            "rerandomize_own_us": _per_op(
                lambda: paillier.rerandomize_own(pub, cts[:n_dec], workers=1), n_dec
            ),
            "decrypt_us": _per_op(
                lambda: paillier.decrypt_many(priv, cts[:n_dec], workers=1), n_dec
            ),
            "ciphertext_bytes": pub.ciphertext_bytes,
            "plaintext_bits": pub.key_bits,
            "packing_key_bits": pub.key_bits,
        }


def _ou_costs(key_bits: int, n: int, use_c: bool) -> dict[str, float]:
    pub, priv = ou.generate_keypair(key_bits, allow_insecure_test_keys=key_bits < 2048)
    small = [secrets.randbits(ROW_BITS) for _ in range(n)]
    large = [secrets.randbelow(pub.plaintext_bound) for _ in range(n)]
    k = secrets.randbits(CONST_BITS)
    matrix = np.random.default_rng(0).integers(0, SUM_GROUPS, (SUM_ROWS, SUM_FEATURES))
    with _kernels(use_c):
        cts = ou.encrypt_many(pub, small)
        return {
            "encrypt_150bit_us": _per_op(lambda: ou.encrypt_many(pub, small), n),
            "encrypt_max_us": _per_op(lambda: ou.encrypt_many(pub, large), n),
            "add_us": _per_op(lambda: [ou.add(pub, c, cts[0]) for c in cts], n),
            "mul_const_us": _per_op(lambda: [ou.mul_const(pub, c, k) for c in cts], n),
            "sum_groups_per_mul_us": _per_op(
                lambda: ou.sum_groups_many(pub, cts[:SUM_ROWS], matrix, SUM_GROUPS),
                SUM_ROWS * SUM_FEATURES,
            ),
            "obfuscate_us": _per_op(lambda: ou.obfuscate_many(pub, cts), n),
            "rerandomize_own_us": _per_op(lambda: ou.rerandomize_own(pub, cts, workers=1), n),
            "decrypt_us": _per_op(lambda: ou.decrypt_many(priv, cts), n),
            "ciphertext_bytes": pub.ciphertext_bytes,
            "plaintext_bits": pub.plaintext_bits,
            "packing_key_bits": ou.packing_key_bits(pub),
        }


def _with_packing(costs: dict[str, float]) -> dict[str, float]:
    """Add SecureBoost's packed-sum figures: sums per ciphertext, bytes and decryption per sum."""
    slots = (int(costs["packing_key_bits"]) - HEADROOM_BITS) // ROW_BITS
    return {
        **costs,
        "sums_per_ciphertext": slots,
        "bytes_per_sum": costs["ciphertext_bytes"] / slots,
        "decrypt_per_sum_us": costs["decrypt_us"] / slots,
    }


def _ratios(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """``a / b`` per figure (for ``sums_per_ciphertext``: ``b / a``, so above 1 favours b)."""
    out = {}
    for key, value in a.items():
        if key in ("plaintext_bits", "packing_key_bits"):
            continue
        out[key] = b[key] / value if key == "sums_per_ciphertext" else value / b[key]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument(
        "--n", type=int, default=1000, help=f"items per timed batch (at least {SUM_ROWS})"
    )
    parser.add_argument("--summary-json", type=Path)
    args = parser.parse_args()
    if args.n < SUM_ROWS:
        parser.error(f"--n must be at least {SUM_ROWS} (rows of the histogram measurement)")
    c_built = paillier.extension.active() is not None
    results: dict[str, Any] = {
        "key_bits": args.key_bits,
        "n": args.n,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "c_kernels": c_built,
    }
    columns = ["ou_python", "paillier_python"]
    comparisons = [("paillier_python", "ou_python")]
    if c_built:
        columns = ["ou_c", "paillier_c", *columns]
        comparisons.insert(0, ("paillier_c", "ou_c"))
    for name in columns:
        scheme, kernels = name.split("_")
        costs = _ou_costs if scheme == "ou" else _paillier_costs
        results[name] = _with_packing(costs(args.key_bits, args.n, kernels == "c"))
    results["ratios"] = {f"{a}/{b}": _ratios(results[a], results[b]) for a, b in comparisons}
    print(f"{args.key_bits}-bit keys, {args.n} items per batch, one core (us per operation)")
    ratio_names = list(results["ratios"])
    print(
        f"{'figure':<24}"
        + "".join(f"{name:>16}" for name in columns)
        + "".join(f"{name:>28}" for name in ratio_names)
    )
    for figure in results[columns[0]]:
        row = f"{figure:<24}" + "".join(f"{results[name][figure]:>16.1f}" for name in columns)
        row += "".join(
            f"{results['ratios'][name].get(figure, float('nan')):>28.2f}" for name in ratio_names
        )
        print(row)
    print("ratios: Paillier / OU per figure (sums_per_ciphertext: OU / Paillier); >1 favours OU")
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
