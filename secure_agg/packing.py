"""Fixed-point packing of gradient pairs into one plaintext, and of many sums into one ciphertext.

SecureBoost's label holder encrypts one ciphertext per row holding the row's gradient ``g``,
hessian ``h`` and a count of 1 (:class:`GradientPacker`); the feature holder sums ciphertexts
per histogram bin (:func:`secure_agg.paillier.sum_groups_many`), then folds ``k`` bin sums into
one ciphertext (:class:`SumPacker`) so the label holder decrypts once per ``k`` bins. With
``g_bound=1, h_bound=0.25, precision_bits=53, max_rows=30000`` a sum takes 150 bits and a 2048-bit
key carries 13 of them: 13x fewer decryptions and 13x less traffic.

Both encodings are redundant on purpose: an honest sum fills only the low bits of each slot, so
:meth:`GradientPacker.decode_sum` and :meth:`SumPacker.unpack` reject plaintexts that no honest
sum can produce (:class:`TamperedError`). A decryption under the wrong key is uniform-looking in
``[0, n)`` and passes with probability below ``2^-(HEADROOM_BITS - 1)``. This is a sanity check,
not integrity: Paillier is malleable, and anyone can add a value that stays within the slots.

What the encodings leak: nothing beyond their plaintexts (the layout is public). The count slot
tells the key holder how many rows each decrypted sum covers; in SecureBoost it learns that from
the split statistics anyway.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt

from secure_agg.paillier import extension, kernels, parallel
from secure_agg.paillier.errors import KeyMismatchError
from secure_agg.paillier.keys import MIN_TEST_KEY_BITS, PublicKey
from secure_agg.paillier.wire import check_fingerprint, ints_from_bytes, ints_to_bytes

__all__ = [
    "HEADROOM_BITS",
    "GradientPacker",
    "KeyMismatchError",
    "PackingError",
    "SumPacker",
    "TamperedError",
    "check_fingerprint",
]

#: Bits of every plaintext left unused below ``n``'s lowest possible top bit. ``n`` has
#: ``key_bits`` bits, so an encoding of at most ``key_bits - HEADROOM_BITS`` bits never wraps
#: modulo ``n``, and a value uniform in ``[0, n)`` (a decryption under another key) fits such an
#: encoding with probability below ``2^-(HEADROOM_BITS - 1)``.
HEADROOM_BITS = 64

#: With ``workers=None``, packing runs in worker processes from this many ciphertexts on.
PARALLEL_MIN_PACK = 256

#: The same with the C kernels, which run on threads of the calling process (at 2048 bits and
#: 150-bit values, 32 ciphertexts take ~15 ms).
THREAD_MIN_PACK = 32


class PackingError(ValueError):
    """A value or a configuration that the encoding cannot represent (the message says which)."""


class TamperedError(PackingError):
    """A plaintext that no honest sum can produce: wrong key, corruption or tampering."""


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool):
        raise PackingError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError as exc:
        raise PackingError(f"{name} must be an integer, got {value!r}") from exc
    if value < low:
        raise PackingError(f"{name} must be at least {low}, got {value}")
    return value


def _check_bound(name: str, value: float) -> float:
    try:
        bound = float(value)
    except (TypeError, ValueError) as exc:
        raise PackingError(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(bound) or bound <= 0:
        raise PackingError(f"{name} must be finite and positive, got {value!r}")
    return bound


@dataclass(frozen=True)
class GradientPacker:
    """Fixed-point encoding of per-row ``(g, h)`` with a row count, as ONE plaintext integer.

    Parameters
    ----------
    g_bound : float
        Gradients lie in ``[-g_bound, g_bound]`` (logistic loss: 1).
    h_bound : float
        Hessians lie in ``[0, h_bound]`` (logistic loss: 0.25).
    precision_bits : int
        Fixed-point scale ``S = 2^precision_bits``; 53 keeps a float64 in ``[-1, 1]`` to within
        ``2^-54``.
    max_rows : int
        Most rows any one sum may cover (the rows of the training set).
    key_bits : int
        Paillier modulus length; the encoding must fit ``key_bits - HEADROOM_BITS`` bits.

    Attributes
    ----------
    g_offset, h_max : int
        ``B_g = ⌈g_bound·S⌉`` and ``B_h = ⌈h_bound·S⌉``.
    g_slot_bits, h_slot_bits, count_slot_bits : int
        Widths ``w_g``, ``w_h``, ``w_c`` of the slots (low to high).
    bits_per_sum : int
        ``w_g + w_h + w_c``: every honest sum is below ``2^bits_per_sum``.

    Notes
    -----
    Encoding of one row::

        G = round(g·S) + B_g   in [0, 2·B_g]
        H = round(h·S)         in [0, B_h]
        m = G + 2^w_g · H + 2^(w_g + w_h) · 1

    ``round`` cannot leave the range: ``|g·S| <= B_g`` and ``B_g`` is an integer (likewise for
    ``h``). Scaling a float by ``2^precision_bits`` is exact, so the only error is the rounding,
    at most ``2^-(precision_bits+1)`` per row.

    *No overflow (proof).* Let ``w_g = bitlen(max_rows·2·B_g)``, ``w_h = bitlen(max_rows·B_h)``,
    ``w_c = bitlen(max_rows)``. An honest sum covers ``R <= max_rows`` rows (:meth:`encode`
    refuses more rows than ``max_rows``), so its slot totals satisfy ``ΣG <= R·2·B_g <
    2^w_g``, ``ΣH <= R·B_h < 2^w_h`` and ``ΣC = R < 2^w_c``. Each total therefore fits its slot
    and the sum of the encodings, ``ΣG + 2^w_g·ΣH + 2^(w_g+w_h)·R``, is exactly the positional
    representation with those digits: no carry crosses a slot boundary. It is below
    ``2^bits_per_sum <= 2^(key_bits - HEADROOM_BITS) < 2^(key_bits - 1) <= n``, so no reduction
    modulo ``n`` happens either, and :meth:`decode_sum` recovers ``ΣG``, ``ΣH``, ``R`` exactly.

    *Validation.* An honest sum of ``R`` rows has ``R <= max_rows``, ``ΣG <= 2·R·B_g`` and
    ``ΣH <= R·B_h``; :meth:`decode_sum` raises :class:`TamperedError` on anything else.
    """

    g_bound: float
    h_bound: float
    precision_bits: int
    max_rows: int
    key_bits: int
    g_offset: int = field(init=False, repr=False)
    h_max: int = field(init=False, repr=False)
    g_slot_bits: int = field(init=False, repr=False)
    h_slot_bits: int = field(init=False, repr=False)
    count_slot_bits: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        g_bound = _check_bound("g_bound", self.g_bound)
        h_bound = _check_bound("h_bound", self.h_bound)
        precision = _check_int("precision_bits", self.precision_bits, 1)
        if precision > 512:
            raise PackingError(f"precision_bits {precision} is absurd; use at most 512")
        max_rows = _check_int("max_rows", self.max_rows, 1)
        key_bits = _check_int("key_bits", self.key_bits, MIN_TEST_KEY_BITS)
        try:
            g_offset = math.ceil(math.ldexp(g_bound, precision))
            h_max = math.ceil(math.ldexp(h_bound, precision))
        except OverflowError as exc:
            raise PackingError(
                f"bounds {g_bound}, {h_bound} at {precision} bits overflow; lower precision_bits"
            ) from exc
        widths = {
            "g_offset": g_offset,
            "h_max": h_max,
            "g_slot_bits": (max_rows * 2 * g_offset).bit_length(),
            "h_slot_bits": (max_rows * h_max).bit_length(),
            "count_slot_bits": max_rows.bit_length(),
        }
        for name, value in {
            "g_bound": g_bound,
            "h_bound": h_bound,
            "precision_bits": precision,
            "max_rows": max_rows,
            "key_bits": key_bits,
            **widths,
        }.items():
            object.__setattr__(self, name, value)
        limit = key_bits - HEADROOM_BITS
        if self.bits_per_sum > limit:
            raise PackingError(
                f"a sum needs {self.bits_per_sum} bits but a {key_bits}-bit key holds at most "
                f"{limit}; lower precision_bits or max_rows, or use a longer key"
            )

    @property
    def bits_per_sum(self) -> int:
        """Width of one (decoded or packed) sum: every honest sum is below ``2^bits_per_sum``."""
        return self.g_slot_bits + self.h_slot_bits + self.count_slot_bits

    @property
    def scale(self) -> int:
        """``S = 2^precision_bits``."""
        return 1 << self.precision_bits

    def sum_packer(self) -> SumPacker:
        """A :class:`SumPacker` for this encoding's sums under the same key length."""
        return SumPacker(self.bits_per_sum, self.key_bits)

    def encode(self, g: npt.ArrayLike, h: npt.ArrayLike) -> list[int]:
        """One plaintext per row (see the class notes), ready for encryption.

        Parameters
        ----------
        g, h : array-like of float, shape (n_rows,)
            ``g`` in ``[-g_bound, g_bound]``, ``h`` in ``[0, h_bound]``; ``n_rows <= max_rows``.

        Raises
        ------
        PackingError
            Naming the first offending index and value, or the row count.
        """
        g_arr = np.asarray(g, dtype=np.float64)
        h_arr = np.asarray(h, dtype=np.float64)
        if g_arr.ndim != 1 or h_arr.shape != g_arr.shape:
            raise PackingError(
                f"g and h must be one-dimensional and equally long, got {g_arr.shape} and "
                f"{h_arr.shape}"
            )
        if len(g_arr) > self.max_rows:
            raise PackingError(
                f"{len(g_arr)} rows exceed max_rows={self.max_rows}: their sum could overflow a "
                "slot; build the packer with max_rows >= the number of rows"
            )
        self._check_range("g", g_arr, -self.g_bound, self.g_bound)
        self._check_range("h", h_arr, 0.0, self.h_bound)
        precision, offset = self.precision_bits, self.g_offset
        count_bit = 1 << (self.g_slot_bits + self.h_slot_bits)
        h_shift = self.g_slot_bits
        return [
            (round(math.ldexp(gi, precision)) + offset)
            | (round(math.ldexp(hi, precision)) << h_shift)
            | count_bit
            for gi, hi in zip(g_arr.tolist(), h_arr.tolist(), strict=True)
        ]

    @staticmethod
    def _check_range(name: str, values: npt.NDArray[np.float64], low: float, high: float) -> None:
        bad = ~np.isfinite(values) | (values < low) | (values > high)
        if bad.any():
            index = int(np.argmax(bad))
            raise PackingError(
                f"{name}[{index}] = {float(values[index])!r} is outside [{low}, {high}]; clip "
                f"to the bound or build the packer with a larger {name}_bound"
            )

    def decode_sum(self, m: int) -> tuple[float, float, int]:
        """``(Σg, Σh, rows)`` of a decrypted sum of encodings.

        Raises
        ------
        TamperedError
            If ``m`` cannot be an honest sum of at most ``max_rows`` encodings (wrong key,
            corrupted or tampered ciphertext).
        """
        m = operator.index(m)
        if not 0 <= m < 1 << self.bits_per_sum:
            raise TamperedError(
                f"a plaintext of {m.bit_length()} bits (sign {'-' if m < 0 else '+'}) cannot be "
                f"a sum of at most {self.max_rows} rows ({self.bits_per_sum} bits): wrong key or "
                "tampered ciphertext"
            )
        low_bits = self.g_slot_bits + self.h_slot_bits
        count = m >> low_bits
        g_total = m & ((1 << self.g_slot_bits) - 1)
        h_total = (m >> self.g_slot_bits) & ((1 << self.h_slot_bits) - 1)
        if count > self.max_rows:
            raise TamperedError(
                f"sum claims {count} rows, more than max_rows={self.max_rows}: wrong key or "
                "tampered ciphertext"
            )
        if g_total > 2 * count * self.g_offset or h_total > count * self.h_max:
            raise TamperedError(
                f"gradient or hessian total out of range for {count} rows: wrong key or "
                "tampered ciphertext"
            )
        scale = self.scale
        return (g_total - count * self.g_offset) / scale, h_total / scale, count

    def decode_sums(
        self, plaintexts: Sequence[int]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """:meth:`decode_sum` over many plaintexts, as arrays ``(g_sums, h_sums, counts)``."""
        decoded = [self.decode_sum(m) for m in plaintexts]
        return (
            np.array([d[0] for d in decoded], dtype=np.float64),
            np.array([d[1] for d in decoded], dtype=np.float64),
            np.array([d[2] for d in decoded], dtype=np.int64),
        )


@dataclass(frozen=True)
class SumPacker:
    """Fold ``capacity`` ciphertexts of ``bits_per_value``-bit plaintexts into one ciphertext.

    With ``w = bits_per_value`` and ciphertexts ``c_0 … c_{k-1}`` of plaintexts ``m_j < 2^w``,
    Horner's rule gives ``C = (…(c_{k-1}^(2^w) · c_{k-2})^(2^w) … ) · c_0 mod n²``, a ciphertext
    of ``M = Σ_j m_j · 2^(w·j)``. As ``M < 2^(w·k) <= 2^(key_bits - HEADROOM_BITS) < n``, no slot
    carries into the next and nothing wraps, so the key holder decrypts ``C`` once and cuts
    ``M`` into the ``k`` values. Cost: ``w`` modular squarings per packed value (about 0.46 ms
    at 2048 bits for ``w = 150`` with the C kernels, 0.63 ms without) against one decryption
    per ``k`` values (about 3 ms each).

    Parameters
    ----------
    bits_per_value : int
        Every packed plaintext is below ``2^bits_per_value`` (e.g.
        :attr:`GradientPacker.bits_per_sum`).
    key_bits : int
        Paillier modulus length.

    Attributes
    ----------
    capacity : int
        ``k = (key_bits - HEADROOM_BITS) // bits_per_value`` values per ciphertext.
    """

    bits_per_value: int
    key_bits: int
    capacity: int = field(init=False)

    def __post_init__(self) -> None:
        bits = _check_int("bits_per_value", self.bits_per_value, 1)
        key_bits = _check_int("key_bits", self.key_bits, MIN_TEST_KEY_BITS)
        capacity = (key_bits - HEADROOM_BITS) // bits
        if capacity < 1:
            raise PackingError(
                f"{bits}-bit values do not fit a {key_bits}-bit key with {HEADROOM_BITS} bits of "
                "headroom; use fewer bits per value or a longer key"
            )
        object.__setattr__(self, "bits_per_value", bits)
        object.__setattr__(self, "key_bits", key_bits)
        object.__setattr__(self, "capacity", capacity)

    def n_packed(self, count: int) -> int:
        """Ciphertexts that :meth:`pack` makes of ``count`` values: ``ceil(count / capacity)``."""
        return math.ceil(_check_int("count", count, 0) / self.capacity)

    def pack(
        self,
        pub: PublicKey,
        ciphertexts: Sequence[int],
        *,
        rerandomize: bool = True,
        workers: int | None = None,
    ) -> list[int]:
        """Pack ciphertexts ``capacity`` at a time (value ``j`` of a group in slot ``j``).

        Parameters
        ----------
        pub : PublicKey
            The key of the ciphertexts; its modulus must have at least ``key_bits`` bits.
        ciphertexts : sequence of int
            Ciphertexts whose plaintexts are below ``2^bits_per_value`` (not checked: only the
            key holder can; a larger one corrupts its neighbours, and :meth:`unpack` or the
            value decoder then usually reports :class:`TamperedError`).
        rerandomize : bool
            Re-randomise each packed ciphertext (:meth:`PublicKey.obfuscate`), so the key holder
            learns the packed sums and nothing about how they were formed, *if* its ``h_s`` is
            honest. Default True; pass False only if the caller re-randomises itself, as a
            party returning packs to the key holder does with its own randomness
            (:func:`secure_agg.paillier.rerandomize_own`, which a crafted ``h_s`` cannot switch
            off; :data:`secure_agg.backends.PAILLIER` ``.pack``).
        workers : int, optional
            ``None``: all usable CPUs from :data:`THREAD_MIN_PACK` ciphertexts on with the C
            kernels, from :data:`PARALLEL_MIN_PACK` without; 1: here; ``k > 1``: ``k`` threads
            with the C kernels (they release the GIL), else ``k`` worker processes.

        Returns
        -------
        list of int
            ``ceil(len(ciphertexts) / capacity)`` ciphertexts.
        """
        if pub.key_bits < self.key_bits:
            raise KeyMismatchError(
                f"this packer is for {self.key_bits}-bit keys; key {pub.fingerprint} has "
                f"{pub.key_bits} bits"
            )
        cts = [pub._check_ciphertext(c) for c in ciphertexts]
        k = self.capacity
        groups = math.ceil(len(cts) / k)
        c_kernels = extension.active()
        threshold = PARALLEL_MIN_PACK if c_kernels is None else THREAD_MIN_PACK
        n_workers = parallel.workers_for(workers, len(cts), threshold, groups)
        if n_workers <= 1:
            return _pack_kernel(pub, cts, self.bits_per_value, k, rerandomize)
        width = pub.ciphertext_bytes
        if parallel.on_threads(c_kernels):
            data = ints_to_bytes(cts, width)
            chunks = [
                data[start * k * width : stop * k * width]
                for start, stop in parallel.split(groups, n_workers)
            ]
            run = functools.partial(
                _pack_payload, pub, bits=self.bits_per_value, capacity=k, rerandomize=rerandomize
            )
            return parallel.gather(parallel.in_threads(run, chunks), width)
        header = (
            parallel.public_header(pub)
            + self.bits_per_value.to_bytes(4, "big")
            + k.to_bytes(4, "big")
            + (b"\x01" if rerandomize else b"\x00")
        )
        parts = [
            (header, ints_to_bytes(cts[start * k : stop * k], width))
            for start, stop in parallel.split(groups, n_workers)
        ]
        return parallel.gather(parallel.run_in_workers(b"P", parts), width)

    def unpack(self, plaintexts: Sequence[int], count: int) -> list[int]:
        """The ``count`` values packed into decrypted ``plaintexts``, in their original order.

        Raises
        ------
        PackingError
            If ``len(plaintexts) != ceil(count / capacity)``.
        TamperedError
            If a plaintext has bits beyond its used slots (wrong key or tampering).
        """
        count = _check_int("count", count, 0)
        if len(plaintexts) != self.n_packed(count):
            raise PackingError(
                f"{count} values need {self.n_packed(count)} packed plaintexts, "
                f"got {len(plaintexts)}"
            )
        w, k = self.bits_per_value, self.capacity
        mask = (1 << w) - 1
        out: list[int] = []
        for index, plaintext in enumerate(plaintexts):
            m = operator.index(plaintext)
            slots = min(k, count - index * k)
            if not 0 <= m < 1 << (w * slots):
                raise TamperedError(
                    f"packed plaintext {index} has {m.bit_length()} bits, more than its "
                    f"{slots} slots of {w} bits: wrong key or tampered ciphertext"
                )
            out.extend((m >> (w * j)) & mask for j in range(slots))
        return out


def _pack_kernel(
    pub: PublicKey, ciphertexts: Sequence[int], bits: int, capacity: int, rerandomize: bool
) -> list[int]:
    """Horner-pack ``ciphertexts`` in groups of ``capacity`` (see :class:`SumPacker`).

    In C when the extension is built (``_gmp_kernels.pack``: the same products, squarings on
    base-``n`` digits, ~1.4x faster); the loop below is the reference.
    """
    if extension.active() is not None:
        width = pub.ciphertext_bytes
        data = _pack_payload(
            pub,
            ints_to_bytes(ciphertexts, width),
            bits=bits,
            capacity=capacity,
            rerandomize=rerandomize,
        )
        return ints_from_bytes(data, width)
    n2 = pub._n2
    shift = gmpy2.mpz(1) << bits
    packed: list[Any] = []
    for start in range(0, len(ciphertexts), capacity):
        group = ciphertexts[start : start + capacity]
        acc = gmpy2.mpz(group[-1])
        for c in reversed(group[:-1]):
            acc = gmpy2.powmod(acc, shift, n2) * c % n2
        packed.append(acc)
    if rerandomize:
        packed = kernels.obfuscate(pub, packed)
    return [int(c) for c in packed]


def _pack_payload(
    pub: PublicKey, payload: bytes, *, bits: int, capacity: int, rerandomize: bool
) -> bytes:
    """:func:`_pack_kernel` on fixed-width ciphertext bytes (the worker's ``P`` request)."""
    width = pub.ciphertext_bytes
    c_kernels = extension.active()
    if c_kernels is None:
        cts = ints_from_bytes(payload, width)
        return ints_to_bytes(_pack_kernel(pub, cts, bits, capacity, rerandomize), width)
    packed = c_kernels.pack(pub.nsquare.to_bytes(width, "big"), payload, width, bits, capacity)
    if rerandomize:
        packed = kernels.obfuscate_c(c_kernels, pub, packed)
    return packed
