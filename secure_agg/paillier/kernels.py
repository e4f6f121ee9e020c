"""Single-process kernels: each operation in C when the extension is in use, else in Python.

Every kernel draws its randomness here with :func:`secrets.token_bytes`, then runs in C
(:mod:`secure_agg.paillier.extension`; the C code draws none) or in the Python loop, which is
the reference: both give the same integers from the same randomness. The ``*_payload`` forms
take and return fixed-width big-endian bytes (:mod:`secure_agg.paillier.wire`) for the worker
processes (:mod:`secure_agg._paillier_worker`), which hand them to C without converting them to
Python integers. The ``*_c`` forms take the extension module explicitly, so that a batch split
over threads uses the same one throughout.
"""

from __future__ import annotations

import math
import operator
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gmpy2
import numpy as np
import numpy.typing as npt

from secure_agg.paillier import extension, tables
from secure_agg.paillier.errors import PaillierError
from secure_agg.paillier.wire import check_width, ints_from_bytes, ints_to_bytes

if TYPE_CHECKING:
    from secure_agg.paillier.extension import Kernels
    from secure_agg.paillier.keys import PrivateKey, PublicKey


def check_plaintexts(pub: PublicKey, plaintexts: Sequence[int]) -> list[int]:
    """The plaintexts as ``int``, each checked to lie in ``[0, n)``.

    Raises
    ------
    PaillierError
        Naming the index of the first plaintext outside ``[0, n)`` (not its value).
    """
    values = [operator.index(m) for m in plaintexts]
    n = pub.n
    for index, m in enumerate(values):
        if not 0 <= m < n:
            raise PaillierError(f"plaintext {index} is outside [0, n) for this key")
    return values


# ---------------------------------------------------------------- one value


def encrypt_one(pub: PublicKey, m: int, digits: bytes) -> Any:
    """DJN encryption of a checked ``m`` with the exponent of little-endian ``digits``."""
    kernels = extension.active()
    if kernels is not None:
        out = tables.public_c_table(kernels, pub).encrypt(
            m.to_bytes(pub.key_bytes, "big"), pub.key_bytes, digits, len(digits)
        )
        return int.from_bytes(out, "big")
    return (1 + m * pub._n) * tables.public_table(pub).power(digits) % pub._n2


def encrypt_naive_one(pub: PublicKey, m: int) -> Any:
    """Textbook encryption of a checked ``m``: ``r`` uniform in ``Z*_n`` (no C kernel)."""
    n = pub.n
    while True:
        r = secrets.randbelow(n - 1) + 1
        if math.gcd(r, n) == 1:
            break
    return (1 + m * pub._n) * gmpy2.powmod(r, pub._n, pub._n2) % pub._n2


def obfuscate_one(pub: PublicKey, c: Any) -> Any:
    """Re-randomisation of a checked ciphertext (see :meth:`PublicKey.obfuscate`)."""
    digits = secrets.token_bytes(pub.obfuscation_exponent_bytes)
    kernels = extension.active()
    if kernels is not None:
        width = pub.ciphertext_bytes
        out = tables.public_c_table(kernels, pub).rerandomize(
            int(c).to_bytes(width, "big"), width, digits, len(digits)
        )
        return int.from_bytes(out, "big")
    return c * tables.public_table(pub).power(digits) % pub._n2


# ---------------------------------------------------------------- public encryption


def encrypt(pub: PublicKey, values: list[int], method: str) -> list[Any]:
    """Encrypt checked plaintexts with ``method`` (``"djn"`` or ``"naive"``)."""
    if method == "naive":
        return [encrypt_naive_one(pub, m) for m in values]
    kernels = extension.active()
    if kernels is not None:
        data = ints_to_bytes(values, pub.key_bytes)
        return ints_from_bytes(encrypt_c(kernels, pub, data), pub.ciphertext_bytes)
    size = pub.encryption_exponent_bytes
    randomness = secrets.token_bytes(size * len(values))
    return [
        encrypt_one(pub, m, randomness[i * size : (i + 1) * size]) for i, m in enumerate(values)
    ]


def encrypt_c(kernels: Kernels, pub: PublicKey, plaintexts: bytes) -> bytes:
    """DJN encryption of fixed-width plaintexts in C."""
    size, width = pub.encryption_exponent_bytes, pub.key_bytes
    randomness = secrets.token_bytes(size * (len(plaintexts) // width))
    return tables.public_c_table(kernels, pub).encrypt(plaintexts, width, randomness, size)


def encrypt_payload(pub: PublicKey, payload: bytes, method: str) -> bytes:
    """Worker form of :func:`encrypt` (the ``E`` and ``N`` requests)."""
    kernels = extension.active()
    if method == "djn" and kernels is not None:
        check_width(payload, pub.key_bytes)
        return encrypt_c(kernels, pub, payload)
    values = check_plaintexts(pub, ints_from_bytes(payload, pub.key_bytes))
    return ints_to_bytes(encrypt(pub, values, method), pub.ciphertext_bytes)


# ---------------------------------------------------------------- the key holder's encryption


def encrypt_private(priv: PrivateKey, values: list[int]) -> list[Any]:
    """Encrypt checked plaintexts as the key holder (CRT; same ciphertexts as DJN)."""
    kernels = extension.active()
    if kernels is not None:
        pub = priv.public_key
        data = encrypt_private_c(kernels, priv, ints_to_bytes(values, pub.key_bytes))
        return ints_from_bytes(data, pub.ciphertext_bytes)
    crt = tables.private_encryptor(priv)
    size = priv.public_key.encryption_exponent_bytes
    randomness = secrets.token_bytes(size * len(values))
    return [
        crt.encrypt(m, int.from_bytes(randomness[i * size : (i + 1) * size], "little"))
        for i, m in enumerate(values)
    ]


def encrypt_private_c(kernels: Kernels, priv: PrivateKey, plaintexts: bytes) -> bytes:
    """:func:`encrypt_private` of fixed-width plaintexts in C."""
    pub = priv.public_key
    size, width = pub.encryption_exponent_bytes, pub.key_bytes
    randomness = secrets.token_bytes(size * (len(plaintexts) // width))
    n = pub.n.to_bytes(width, "big")
    return tables.private_c_encryptor(kernels, priv).encrypt(n, plaintexts, width, randomness, size)


def encrypt_private_payload(priv: PrivateKey, payload: bytes) -> bytes:
    """Worker form of :func:`encrypt_private` (the ``C`` request)."""
    pub = priv.public_key
    kernels = extension.active()
    if kernels is not None:
        check_width(payload, pub.key_bytes)
        return encrypt_private_c(kernels, priv, payload)
    values = check_plaintexts(pub, ints_from_bytes(payload, pub.key_bytes))
    return ints_to_bytes(encrypt_private(priv, values), pub.ciphertext_bytes)


# ---------------------------------------------------------------- re-randomisation


def obfuscate(pub: PublicKey, cts: Sequence[int]) -> list[Any]:
    """Re-randomise checked ciphertexts."""
    kernels = extension.active()
    if kernels is not None:
        data = obfuscate_c(kernels, pub, ints_to_bytes(cts, pub.ciphertext_bytes))
        return ints_from_bytes(data, pub.ciphertext_bytes)
    size = pub.obfuscation_exponent_bytes
    randomness = secrets.token_bytes(size * len(cts))
    table, n2 = tables.public_table(pub), pub._n2
    return [
        gmpy2.mpz(c) * table.power(randomness[i * size : (i + 1) * size]) % n2
        for i, c in enumerate(cts)
    ]


def obfuscate_c(kernels: Kernels, pub: PublicKey, ciphertexts: bytes) -> bytes:
    """:func:`obfuscate` of fixed-width ciphertexts in C."""
    size, width = pub.obfuscation_exponent_bytes, pub.ciphertext_bytes
    randomness = secrets.token_bytes(size * (len(ciphertexts) // width))
    return tables.public_c_table(kernels, pub).rerandomize(ciphertexts, width, randomness, size)


def obfuscate_payload(pub: PublicKey, payload: bytes) -> bytes:
    """Worker form of :func:`obfuscate` (the ``O`` request)."""
    kernels = extension.active()
    if kernels is not None:
        check_width(payload, pub.ciphertext_bytes)
        return obfuscate_c(kernels, pub, payload)
    cts = ints_from_bytes(payload, pub.ciphertext_bytes)
    return ints_to_bytes(obfuscate(pub, cts), pub.ciphertext_bytes)


# ---------------------------------------------------------------- decryption


def decrypt(priv: PrivateKey, cts: Sequence[int]) -> list[Any]:
    """CRT decryption of checked ciphertexts (Python only: GMP's powmod does the work)."""
    return [priv._decrypt(gmpy2.mpz(c)) for c in cts]


# ---------------------------------------------------------------- group sums (histograms)


def group_sums(n2: Any, cts: list[Any], matrix: npt.NDArray[Any], n_groups: int) -> list[list[Any]]:
    """Per column, per group, the product of the rows' ciphertexts (None for an empty group).

    In C when the extension is in use (same products); the loop below is the reference.
    """
    kernels = extension.active()
    if kernels is not None:
        width = (int(n2).bit_length() + 7) // 8
        n_rows, n_cols = matrix.shape
        groups = np.ascontiguousarray(matrix, dtype=np.int32).tobytes()
        reply = kernels.group_sums(
            int(n2).to_bytes(width, "big"),
            ints_to_bytes(cts, width),
            width,
            groups,
            n_rows,
            n_cols,
            n_groups,
        )
        values = ints_from_bytes(reply, width)
        return [
            [v or None for v in values[j * n_groups : (j + 1) * n_groups]] for j in range(n_cols)
        ]
    out: list[list[Any]] = []
    for j in range(matrix.shape[1]):
        acc: list[Any] = [None] * n_groups
        for c, g in zip(cts, matrix[:, j].tolist(), strict=True):
            if g >= 0:
                a = acc[g]
                acc[g] = c if a is None else a * c % n2
        out.append(acc)
    return out


def group_sums_c(
    kernels: Kernels,
    pub: PublicKey,
    ciphertexts: bytes,
    n_rows: int,
    n_groups: int,
    block: npt.NDArray[np.int32],
) -> bytes:
    """Group sums of a C-contiguous int32 block of columns over all rows (C kernel)."""
    width = pub.ciphertext_bytes
    return kernels.group_sums(
        pub.nsquare.to_bytes(width, "big"),
        ciphertexts,
        width,
        block.tobytes(),
        n_rows,
        block.shape[1],
        n_groups,
    )


def group_sums_payload(
    pub: PublicKey, payload: bytes, n_rows: int, n_cols: int, n_groups: int
) -> bytes:
    """Worker form of :func:`group_sums` (the ``S`` request); empty groups as zero bytes."""
    width = pub.ciphertext_bytes
    split = n_rows * width
    if len(payload) != split + 4 * n_rows * n_cols:
        raise PaillierError(f"group-sum request of {len(payload)} bytes has the wrong length")
    kernels = extension.active()
    if kernels is not None:
        return kernels.group_sums(
            pub.nsquare.to_bytes(width, "big"),
            payload[:split],
            width,
            payload[split:],
            n_rows,
            n_cols,
            n_groups,
        )
    cts = [gmpy2.mpz(c) for c in ints_from_bytes(payload[:split], width)]
    matrix = np.frombuffer(payload[split:], dtype=np.int32).reshape(n_rows, n_cols)
    sums = group_sums(pub._n2, cts, matrix, n_groups)
    return b"".join(
        bytes(width) if a is None else int(a).to_bytes(width, "big")
        for column in sums
        for a in column
    )


#: Bytes per bin a binned group-sum (``B``) request may carry: ``uint8``, ``uint16`` or ``int32``.
BIN_ITEMSIZES = {1: np.uint8, 2: np.uint16, 4: np.int32}


def binned_groups(
    bins: npt.NDArray[Any], slots: npt.NDArray[Any], width: int
) -> npt.NDArray[np.int32]:
    """Group ids ``slot * width + bin`` (int32, C order), ``-1`` for rows whose slot is -1.

    Raises
    ------
    PaillierError
        If a bin is outside ``[0, width)``, a slot below -1, or the shapes do not match.
    """
    if bins.ndim != 2 or slots.shape != (bins.shape[0],):
        raise PaillierError(f"bins {bins.shape} and slots {slots.shape} do not match")
    if bins.size and (int(bins.min()) < 0 or int(bins.max()) >= width):
        raise PaillierError(f"a bin is outside [0, {width})")
    if slots.size and int(slots.min()) < -1:
        raise PaillierError("a node slot is below -1")
    groups = np.asarray(bins, dtype=np.int32) + (slots.astype(np.int32) * np.int32(width))[:, None]
    groups[slots < 0] = -1
    return groups


def binned_sums_c(
    kernels: Kernels,
    pub: PublicKey,
    ciphertexts: bytes | memoryview,
    bins: npt.NDArray[Any],
    slots: npt.NDArray[np.int32],
    width: int,
    n_groups: int,
    columns: tuple[int, int],
) -> bytes:
    """Group sums of ``columns`` of ``bins`` with groups ``slot * width + bin`` (C kernel).

    ``bins`` is read in place (C order, one of :data:`BIN_ITEMSIZES`): the kernel makes each
    group id as it reads it, so neither the caller nor the kernel holds a matrix of them, and
    threads summing different columns or rows share one copy of the bins.
    """
    n_rows, n_cols = bins.shape
    start, stop = columns
    ct_width = pub.ciphertext_bytes
    return kernels.binned_sums(
        pub.nsquare.to_bytes(ct_width, "big"),
        ciphertexts,
        ct_width,
        np.ascontiguousarray(bins).data.cast("B"),
        bins.dtype.itemsize,
        n_rows,
        n_cols,
        start,
        stop,
        np.ascontiguousarray(slots, dtype=np.int32).data.cast("B"),
        width,
        n_groups,
    )


def binned_dtype(bins: npt.NDArray[Any], width: int) -> npt.NDArray[Any]:
    """``bins`` as the smallest dtype of :data:`BIN_ITEMSIZES` that holds ``[0, width)``.

    No copy when they already are (a platform keeps its bins as ``uint8`` for up to 255 bins).
    """
    itemsize = 1 if width <= 1 << 8 else 2 if width <= 1 << 16 else 4
    return np.ascontiguousarray(bins, dtype=BIN_ITEMSIZES[itemsize])


def binned_sums_payload(pub: PublicKey, payload: bytes, rest: bytes) -> bytes:
    """Worker form of binned group sums (the ``B`` request; see :mod:`secure_agg._paillier_worker`).

    ``payload``: the part's ciphertexts, its bins and its rows' node slots, one after the other
    (:func:`binned_sums_parts` takes them as separate buffers).
    """
    return binned_sums_parts(pub, [payload], rest)


def binned_sums_parts(
    pub: PublicKey, parts: Sequence[bytes | memoryview | npt.NDArray[Any]], rest: bytes
) -> bytes:
    """:func:`binned_sums_payload` of a payload given as consecutive buffers.

    Given as three buffers (ciphertexts, bins, slots: a Ray task's kept blocks in the object
    store and its own slots), they are read in place, not joined. With the C kernels the group
    ids are made as the kernel reads the bins and the rows' node slots; otherwise here, one
    part at a time. Either way the caller never holds (or sends) a matrix of them.
    """
    n_rows = int.from_bytes(rest[:8], "big")
    n_cols = int.from_bytes(rest[8:12], "big")
    n_groups = int.from_bytes(rest[12:16], "big")
    width = int.from_bytes(rest[16:20], "big")
    itemsize = rest[20] if len(rest) > 20 else 0
    dtype = BIN_ITEMSIZES.get(itemsize)
    if dtype is None or width < 1:
        raise PaillierError(f"binned group-sum request with bin size {itemsize}, width {width}")
    ct_bytes = n_rows * pub.ciphertext_bytes
    bin_bytes = n_rows * n_cols * itemsize
    views = [
        part.data.cast("B") if isinstance(part, np.ndarray) else memoryview(part).cast("B")
        for part in parts
    ]
    sizes = [ct_bytes, bin_bytes, 4 * n_rows]
    if [v.nbytes for v in views] != sizes:
        if sum(v.nbytes for v in views) != sum(sizes):
            raise PaillierError(
                f"binned group-sum request of {sum(v.nbytes for v in views)} bytes has the "
                "wrong length"
            )
        joined = memoryview(b"".join(views))
        views = [joined[:ct_bytes], joined[ct_bytes : ct_bytes + bin_bytes]]
        views.append(joined[ct_bytes + bin_bytes :])
    bins = np.frombuffer(views[1], dtype=dtype).reshape(n_rows, n_cols)
    slots = np.frombuffer(views[2], dtype=np.int32)
    kernels = extension.active()
    if kernels is not None:
        try:
            return binned_sums_c(kernels, pub, views[0], bins, slots, width, n_groups, (0, n_cols))
        except ValueError as exc:
            raise PaillierError(str(exc)) from exc
    groups = binned_groups(bins, slots, width)
    if groups.size and int(groups.max()) >= n_groups:
        raise PaillierError(f"a group id is outside [-1, {n_groups})")
    data = bytes(views[0]) + groups.tobytes()
    return group_sums_payload(pub, data, n_rows, n_cols, n_groups)
