"""Homomorphic operations: addition, multiplication by a constant, group sums (histograms).

The product of two ciphertexts encrypts the sum of their plaintexts and ``c^k`` encrypts
``k·m`` (both mod ``n``). None of these results is re-randomised: their randomisers are
functions of the inputs' randomisers, which the key holder knows, so re-randomise before a
result leaves the party: with the sender's own randomness (:func:`rerandomize_own`) when it goes
to the key holder, who must not be able to switch the re-randomisation off;
:meth:`PublicKey.obfuscate` and :func:`secure_agg.paillier.obfuscate_many` use the key holder's
base ``h_s`` and hide nothing from a key holder who chose ``h_s`` to. An empty group's sum is the
integer 1, a transparent encryption of 0.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gmpy2
import numpy as np
import numpy.typing as npt

from secure_agg import compute, own_randomness
from secure_agg.paillier import extension, kernels, parallel
from secure_agg.paillier.errors import PaillierError
from secure_agg.paillier.wire import ints_from_bytes, ints_to_bytes

if TYPE_CHECKING:
    from secure_agg.paillier.extension import Kernels
    from secure_agg.paillier.keys import PublicKey

# Costs (microseconds at 2048 bits, measured here) that choose how sum_groups_many splits work
# over threads: a block of columns repeats the C kernel's per-row set-up (a table of the row's
# ciphertext times 2^(64j)) in every thread; a block of rows leaves partial sums to combine.
_ROW_SETUP_US = 7.0
_COMBINE_US = 5.5


def add(pub: PublicKey, c1: int, c2: int) -> int:
    """A ciphertext of ``m1 + m2 mod n`` (not re-randomised)."""
    return int(gmpy2.mpz(pub._check_ciphertext(c1)) * pub._check_ciphertext(c2) % pub._n2)


def mul_const(pub: PublicKey, c: int, k: int) -> int:
    """A ciphertext of ``k · m mod n`` for any integer ``k`` (negative via the modular inverse).

    ``k = 0`` gives 1, a transparent encryption of 0. Not re-randomised: the result's randomiser
    is the input's to the power ``k``, so re-randomise before sending it to the key holder if
    ``k`` must stay secret.

    Raises
    ------
    PaillierError
        If ``c`` is out of range or (for negative ``k``) not invertible modulo ``n²``.
    """
    c = pub._check_ciphertext(c)
    k = operator.index(k)
    base = gmpy2.mpz(c)
    if k < 0 and -k < pub.n:
        try:
            base = gmpy2.invert(base, pub._n2)
        except ZeroDivisionError as exc:
            raise PaillierError("ciphertext is not invertible modulo n² (not a unit)") from exc
        k = -k
    elif not 0 <= k < pub.n:
        k %= pub.n
    return int(gmpy2.powmod(base, k, pub._n2))


def sum_groups(
    pub: PublicKey, ciphertexts: Sequence[int], group_ids: npt.NDArray[Any], n_groups: int
) -> list[int]:
    """Homomorphic sum of the ciphertexts per group id (in this process).

    Parameters
    ----------
    pub : PublicKey
    ciphertexts : sequence of int
        One per row.
    group_ids : numpy.ndarray of int, shape (n_rows,)
        Group of each row in ``[0, n_groups)``; rows with -1 are skipped.
    n_groups : int

    Returns
    -------
    list of int
        ``n_groups`` ciphertexts. An empty group's sum is 1, a transparent encryption of 0 (fine
        for further sums; re-randomise before it leaves the party). Not re-randomised.
    """
    ids = np.asarray(group_ids)
    if ids.ndim != 1:
        raise PaillierError(f"group_ids must be one-dimensional, got shape {ids.shape}")
    return sum_groups_many(pub, ciphertexts, ids.reshape(-1, 1), n_groups, workers=1)[0]


def sum_groups_many(
    pub: PublicKey,
    ciphertexts: Sequence[int],
    group_matrix: npt.NDArray[Any],
    n_groups: int,
    *,
    workers: int | None = None,
) -> list[list[int]]:
    """Per feature column, the homomorphic sum of the ciphertexts per group: histogram kernel.

    One modular multiplication per (row, column) with a group id other than -1: in C when the
    extension is built (base-``n`` digits, or per-row tables from
    ``_gmp_kernels.TABLE_MIN_COLS`` columns on), else in place on gmpy2 integers. In parallel,
    each thread (C kernels) or worker process (Python kernels) takes a block of columns over all
    rows when every block keeps at least that many columns (no partial sums to combine);
    otherwise each takes a block of rows, and their partial sums are multiplied together here.

    Parameters
    ----------
    pub : PublicKey
    ciphertexts : sequence of int
        One per row (e.g. encrypted packed gradients).
    group_matrix : numpy.ndarray of int, shape (n_rows, n_features)
        Group (bin, or node x bin) of each row for each feature in ``[0, n_groups)``; -1 skips
        the row for that feature.
    n_groups : int
    workers : int, optional
        ``None`` uses all usable CPUs for large inputs
        (:data:`~secure_agg.paillier.parallel.THREAD_MIN_ADDS` multiplications or more with the
        C kernels, :data:`~secure_agg.paillier.parallel.PARALLEL_MIN_ADDS` without), 1 runs in
        the calling thread, ``k > 1`` uses ``k`` threads (C kernels, which release the GIL) or
        worker processes (Python kernels).

    Returns
    -------
    list of list of int
        ``out[j][g]``: the sum over rows ``i`` with ``group_matrix[i, j] == g``; 1 for an empty
        group. Not re-randomised (see :meth:`PublicKey.obfuscate`).

    Raises
    ------
    PaillierError
        On shape mismatches, non-integer or out-of-range group ids, or bad ciphertexts.
    """
    n_groups = operator.index(n_groups)
    if n_groups < 0:
        raise PaillierError(f"n_groups must be non-negative, got {n_groups}")
    matrix = _check_groups(group_matrix, len(ciphertexts), n_groups)
    c_kernels = extension.active()
    cts: list[Any] = [pub._check_ciphertext(c) for c in ciphertexts]
    if c_kernels is None:
        cts = [gmpy2.mpz(c) for c in cts]
    n_rows, n_cols = matrix.shape
    adds = int(np.count_nonzero(matrix >= 0))
    threshold = parallel.PARALLEL_MIN_ADDS if c_kernels is None else parallel.THREAD_MIN_ADDS
    n_workers = parallel.workers_for(workers, adds, threshold, n_rows)
    if n_workers <= 1:
        partial = kernels.group_sums(pub._n2, cts, matrix, n_groups)
        return [[1 if a is None else int(a) for a in column] for column in partial]
    width = pub.ciphertext_bytes
    columns = parallel.split(n_cols, n_workers)
    if _split_by_columns(c_kernels, columns, n_rows, n_groups, n_workers):
        # Columns split: every part gets all rows, no partial sums to combine.
        blocks = [np.ascontiguousarray(matrix[:, a:b], dtype=np.int32) for a, b in columns]
        everything = ints_to_bytes(cts, width)
        if parallel.on_threads(c_kernels):
            run = functools.partial(
                kernels.group_sums_c, c_kernels, pub, everything, n_rows, n_groups
            )
            values = parallel.gather(parallel.in_threads(run, blocks), width)
        else:
            header = parallel.public_header(pub)
            parts = [
                (
                    header + parallel.sums_header(n_rows, block.shape[1], n_groups),
                    everything + block.tobytes(),
                )
                for block in blocks
            ]
            values = parallel.gather(parallel.run_in_workers(b"S", parts), width)
        return [[v or 1 for v in values[j * n_groups : (j + 1) * n_groups]] for j in range(n_cols)]
    rows = parallel.split(n_rows, n_workers)
    if parallel.on_threads(c_kernels):
        run_rows = functools.partial(_sum_rows_c, c_kernels, pub, cts, matrix, n_groups)
        replies = parallel.in_threads(run_rows, rows)
    else:
        parts = []
        for start, stop in rows:
            chunk = np.ascontiguousarray(matrix[start:stop], dtype=np.int32)
            header = parallel.public_header(pub) + parallel.sums_header(
                stop - start, n_cols, n_groups
            )
            parts.append((header, ints_to_bytes(cts[start:stop], width) + chunk.tobytes()))
        replies = parallel.run_in_workers(b"S", parts)
    return _combine_rows(pub, replies, n_cols, n_groups)


def _combine_rows(
    pub: PublicKey, replies: Sequence[bytes], n_cols: int, n_groups: int
) -> list[list[int]]:
    """Multiply the partial sums of blocks of rows together: ``out[column][group]``."""
    n2, width = pub._n2, pub.ciphertext_bytes
    total: list[Any] = [None] * (n_cols * n_groups)
    for reply in replies:
        for index, value in enumerate(ints_from_bytes(reply, width)):
            if value:
                current = total[index]
                total[index] = gmpy2.mpz(value) if current is None else current * value % n2
    return [
        [1 if a is None else int(a) for a in total[j * n_groups : (j + 1) * n_groups]]
        for j in range(n_cols)
    ]


def sum_binned_many(
    pub: PublicKey,
    ciphertexts: Sequence[int],
    bins: npt.NDArray[Any],
    slots: npt.NDArray[Any],
    width: int,
    n_groups: int,
    *,
    workers: int | None = None,
) -> list[list[int]]:
    """:func:`sum_groups_many` of the groups ``slot * width + bin``, without a matrix of them.

    A SecureBoost level: ``bins`` (rows x columns, each in ``[0, width)``) do not change during
    a job, the ciphertexts only per tree, the rows' node ``slots`` (-1: on no node of the level)
    every level. On a remote compute backend (:mod:`secure_agg.compute`) the bins and the
    ciphertexts go to the cluster once (:meth:`secure_agg.ray_backend.RayGateway.share`, kept in
    its object store) and each level sends only the slots; every task sums its own part (the
    ``B`` request). Locally this process's threads sum blocks of columns (or
    rows) of the one copy of the bins in place. With the C kernels no matrix of group ids is
    made anywhere: the kernel makes each id as it reads a bin
    (:func:`secure_agg.paillier.kernels.binned_sums_c`); the Python reference kernels make the
    matrix and call :func:`sum_groups_many`. All give exactly :func:`sum_groups_many`'s result.

    Raises
    ------
    PaillierError
        On shape mismatches, a bin outside ``[0, width)``, a group id outside ``[-1,
        n_groups)`` or bad ciphertexts.
    """
    bins = np.asarray(bins)
    slots = np.asarray(slots)
    if bins.ndim != 2 or bins.shape[0] != len(ciphertexts) or slots.shape != (len(ciphertexts),):
        raise PaillierError(
            f"bins {bins.shape} and slots {slots.shape} do not match {len(ciphertexts)} rows"
        )
    if not np.issubdtype(bins.dtype, np.integer) or not np.issubdtype(slots.dtype, np.integer):
        raise PaillierError("bins and slots must be integers")
    if slots.size and (int(slots.min()) < -1 or (int(slots.max()) + 1) * width > n_groups):
        raise PaillierError(f"a node slot is outside [-1, {n_groups // max(1, width)})")
    n_rows, n_cols = bins.shape
    adds = n_cols * int(np.count_nonzero(slots >= 0))
    remote = compute.active().remote
    c_kernels = extension.active()
    n_workers = parallel.workers_for(workers, adds, parallel.THREAD_MIN_ADDS, n_rows)
    if c_kernels is None and (not remote or n_workers <= 1):
        # The Python reference kernels, here: a matrix of ids (a remote level too small to send
        # stays here too).
        return sum_groups_many(
            pub, ciphertexts, kernels.binned_groups(bins, slots, width), n_groups, workers=workers
        )
    if bins.size and (int(bins.min()) < 0 or int(bins.max()) >= width):
        raise PaillierError(f"a bin is outside [0, {width})")
    cts: list[Any] = [pub._check_ciphertext(c) for c in ciphertexts]
    slots = np.ascontiguousarray(slots, dtype=np.int32)
    small = kernels.binned_dtype(bins, width)
    ct_width = pub.ciphertext_bytes
    columns = parallel.split(n_cols, max(1, n_workers))
    by_columns = _split_by_columns(c_kernels, columns, n_rows, n_groups, n_workers)
    everything = ints_to_bytes(cts, ct_width)
    if c_kernels is not None and (not remote or n_workers <= 1):
        # On this process's threads, all reading the one copy of the bins in place.
        if n_workers <= 1 or by_columns:
            run = functools.partial(
                kernels.binned_sums_c, c_kernels, pub, everything, small, slots, width, n_groups
            )
            values = parallel.gather(parallel.in_threads(run, columns), ct_width)
            return [
                [v or 1 for v in values[j * n_groups : (j + 1) * n_groups]] for j in range(n_cols)
            ]
        view = memoryview(everything)
        run_rows = functools.partial(
            _binned_rows_c, c_kernels, pub, view, small, slots, width, n_groups
        )
        replies = parallel.in_threads(run_rows, parallel.split(n_rows, n_workers))
        return _combine_rows(pub, replies, n_cols, n_groups)
    itemsize = small.dtype.itemsize
    parts: list[tuple[bytes, list[bytes], bytes]] = []
    if by_columns:
        for start, stop in columns:
            header = parallel.public_header(pub) + parallel.binned_header(
                n_rows, stop - start, n_groups, width, itemsize
            )
            block = np.ascontiguousarray(small[:, start:stop]).tobytes()
            parts.append((header, [everything, block], slots.tobytes()))
        replies = parallel.run_in_workers(b"B", parts)
        values = parallel.gather(replies, ct_width)
        return [[v or 1 for v in values[j * n_groups : (j + 1) * n_groups]] for j in range(n_cols)]
    for start, stop in parallel.split(n_rows, n_workers):
        header = parallel.public_header(pub) + parallel.binned_header(
            stop - start, n_cols, n_groups, width, itemsize
        )
        shared = [everything[start * ct_width : stop * ct_width], small[start:stop].tobytes()]
        parts.append((header, shared, slots[start:stop].tobytes()))
    return _combine_rows(pub, parallel.run_in_workers(b"B", parts), n_cols, n_groups)


def _binned_rows_c(
    c_kernels: Kernels,
    pub: PublicKey,
    ciphertexts: memoryview,
    bins: npt.NDArray[Any],
    slots: npt.NDArray[np.int32],
    width: int,
    n_groups: int,
    rows: tuple[int, int],
) -> bytes:
    """Partial binned group sums of rows ``[start, stop)`` over all columns (C kernel, no copy)."""
    start, stop = rows
    ct_width = pub.ciphertext_bytes
    return kernels.binned_sums_c(
        c_kernels,
        pub,
        ciphertexts[start * ct_width : stop * ct_width],
        bins[start:stop],
        slots[start:stop],
        width,
        n_groups,
        (0, bins.shape[1]),
    )


def _check_groups(group_matrix: npt.NDArray[Any], n_rows: int, n_groups: int) -> npt.NDArray[Any]:
    matrix = np.asarray(group_matrix)
    if matrix.ndim != 2 or matrix.shape[0] != n_rows:
        raise PaillierError(
            f"group_matrix must have shape ({n_rows}, n_features), got {matrix.shape}"
        )
    if not np.issubdtype(matrix.dtype, np.integer):
        raise PaillierError(f"group ids must be integers, got dtype {matrix.dtype}")
    if matrix.size:
        low, high = int(matrix.min()), int(matrix.max())
        if low < -1 or high >= n_groups:
            bad = low if low < -1 else high
            row, col = np.argwhere(matrix == bad)[0]
            raise PaillierError(
                f"group id {bad} at row {row}, column {col} is outside [-1, {n_groups})"
            )
    if n_groups >= 2**31:
        raise PaillierError(f"n_groups {n_groups} is too large")
    return matrix


def _split_by_columns(
    c_kernels: Kernels | None,
    columns: list[tuple[int, int]],
    n_rows: int,
    n_groups: int,
    n_workers: int,
) -> bool:
    """Whether :func:`sum_groups_many` gives each thread or worker a block of columns.

    Python kernels have no per-row set-up, so blocks of columns (nothing to combine) win. The
    C kernels do: split by columns only if every block keeps the per-row tables
    (``TABLE_MIN_COLS`` columns) and repeating their set-up costs less than combining
    ``(n_workers - 1) * n_cols * n_groups`` partial sums here.
    """
    if not columns:
        return False
    if c_kernels is None:
        return True
    if min(stop - start for start, stop in columns) < c_kernels.TABLE_MIN_COLS:
        return False
    n_cols = columns[-1][1]
    repeated = n_rows * (1 - 1 / n_workers) * _ROW_SETUP_US
    return repeated < (n_workers - 1) * n_cols * n_groups * _COMBINE_US


def _sum_rows_c(
    c_kernels: Kernels,
    pub: PublicKey,
    cts: Sequence[Any],
    matrix: npt.NDArray[Any],
    n_groups: int,
    rows: tuple[int, int],
) -> bytes:
    """Partial group sums of rows ``[start, stop)`` over all columns (C kernel)."""
    start, stop = rows
    block = np.ascontiguousarray(matrix[start:stop], dtype=np.int32)
    data = ints_to_bytes(cts[start:stop], pub.ciphertext_bytes)
    return kernels.group_sums_c(c_kernels, pub, data, stop - start, n_groups, block)


def rerandomize_own(
    pub: PublicKey,
    ciphertexts: Sequence[int],
    *,
    factors: Sequence[int] = (),
    workers: int | None = None,
) -> list[int]:
    """Re-randomise with the sender's own randomness: ``c · y^n mod n²``, fresh ``y`` per ``c``.

    ``y`` is drawn with :mod:`secrets` uniformly from ``Z*_n``; nothing comes from the key holder
    but ``n`` (:mod:`secure_agg.own_randomness`), in particular not the DJN base ``h_s`` that
    :meth:`PublicKey.obfuscate` uses. Use it for every ciphertext that returns to the key holder
    after homomorphic operations. It costs a full exponentiation modulo ``n²`` (the cost of a
    naive encryption) instead of ``h_s``'s table look-ups.

    ``factors``: ``y^n mod n²`` made ahead by the sender itself (:func:`own_factors`), one
    for each of the first ciphertexts, each used once; the rest get factors made here. Either way
    ``y`` is fresh, uniform and the sender's, so the argument below is unchanged.

    Why the output hides how ``c`` was formed. When ``gcd(n, φ(n)) = 1``,
    ``(m, r) ↦ (1 + n)^m · r^n mod n²`` is an isomorphism ``Z_n × Z*_n → Z*_{n²}`` (Paillier
    1999, Lemma 1), so the units that decrypt to ``m`` are exactly the coset ``(1 + m·n) · N``
    of the ``n``-th residues ``N``: any tag the key holder hides in a ciphertext without changing
    its plaintext (e.g. a factor ``≡ 1 mod p²`` of order dividing ``q(q - 1)``, which a key with
    ``h_s ≡ 1 mod q²`` never re-randomises) is an element of ``N``. ``y^n mod n²`` depends on
    ``y mod n`` only and ``y ↦ y^n`` maps ``Z*_n`` one-to-one onto ``N``; so ``y^n`` is uniform
    in ``N`` and ``c · y^n`` is uniform in ``(1 + m·n) · N`` whatever ``c`` was: its distribution
    depends on the plaintext alone (exactly, not statistically).

    What remains. ``gcd(n, φ(n)) = 1`` holds for every key of
    :func:`secure_agg.paillier.generate_keypair` (primes of equal length; its admissibility test
    checks it too) but cannot be checked without the factors: a key holder who deliberately builds
    ``n`` with ``p | q - 1`` keeps a part of ``Z*_{n²}`` that the ``n``-th powers never reach, a
    channel for tags, while it can still decrypt. Closing it needs a proof from the key holder that
    ``n`` is well formed (e.g. that ``gcd(n, φ(n)) = 1``; not implemented); the protocols assume it.
    A tag in the plaintext itself (values outside the agreed encoding) is untouched by any
    re-randomisation.

    Raises
    ------
    PaillierError
        If a ciphertext is outside ``(0, n²)`` or not a unit (a non-unit carries a factor of
        ``n`` through every product: a tag that no unit can remove).
    """
    cts = [pub._check_ciphertext(c) for c in ciphertexts]
    n = pub._n
    # The message names no index: which of the sums is not a unit would tell the key holder
    # where a row it tagged ended up.
    if any(gmpy2.gcd(c, n) != 1 for c in cts):
        raise PaillierError(f"a ciphertext is not a unit for key {pub.fingerprint}")
    return own_randomness.nth_power_rerandomize(
        cts, pub.n, pub.nsquare, factors=factors, workers=workers
    )


def own_factors(pub: PublicKey, count: int, *, workers: int | None = None) -> list[int]:
    """``count`` factors ``y^n mod n²`` for :func:`rerandomize_own`, a fresh ``y`` each.

    The sender's own randomness made ahead (``y`` uniform in ``Z*_n`` from :mod:`secrets`;
    nothing but ``n`` comes from the key holder). Secret to the sender and used once each: two
    ciphertexts sharing a factor would reveal their quotient's plaintext part.
    """
    return own_randomness.nth_power_factors(pub.n, pub.nsquare, count, workers=workers)
