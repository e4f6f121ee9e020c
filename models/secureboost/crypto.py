"""SecureBoost's use of additive HE: encrypting gradients, summing histograms, decoding sums.

The scheme is the bank's key pair's (:class:`models.vertical.keys.KeyPair`): Paillier by
default, Okamoto–Uchiyama when the job asks for ``crypto.scheme: ou`` and both nodes' policies
allow it; every operation goes through the scheme's :class:`secure_agg.backends.HEBackend`.

A thin adapter over :mod:`secure_agg` (which owns the cryptography): it fixes the plaintext
layout of one training row. The bank's key pair (:class:`models.vertical.keys.KeyPair`) stays in
the bank's own party store between protocol messages (never in a model, a log or a message).

Plaintext layout of one row, from the integers of :func:`models.secureboost.core.gradients`
(``|g| <= 2^32``, ``0 <= h <= 2^30``): four slots, most significant first,
``g+ = max(g, 0)``, ``g- = max(-g, 0)``, ``h``, ``1``. Every slot is nonnegative, so sums need no
offset, and each slot is wide enough that a sum over ``max_rows`` rows cannot carry into the next
(``C = bits(max_rows) + 1``; widths ``32 + C``, ``32 + C``, ``30 + C``, ``C``): the decoded
``(G = G+ - G-, H, count)`` are the exact integer sums the plaintext core computes.

Differential privacy: the platform may add Gaussian noise to each released sum, under
encryption. Noise goes into the ``g+``, ``h`` and count slots with a public offset that keeps
them nonnegative (40 standard deviations: a negative draw beyond it has probability below
1e-300); ``noise_bits`` of headroom per slot hold it. The bank subtracts the offsets.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.protocol import ProtocolError
from models.secureboost.core import PRECISION_BITS, IntArray
from models.vertical.keys import KeyPair
from secure_agg import ou, packing
from secure_agg.backends import HEBackend
from secure_agg.schemes import DEFAULT_SCHEME, get_scheme, scheme_of_public_key

#: Offset of noisy slots in standard deviations.
NOISE_OFFSET_SIGMAS = 40


class TamperedSumError(ProtocolError):
    """A decrypted sum cannot come from honestly encrypted rows (wrong key or tampering)."""


@dataclass(frozen=True)
class NoiseSpec:
    """Gaussian noise the platform adds to every released (G, H, count) sum.

    ``sigma_gh`` is in fixed-point units (``2^32`` per unit of gradient), ``sigma_count`` in
    rows. Offsets keep noisy slots nonnegative.
    """

    sigma_gh: float
    sigma_count: float

    @property
    def offset_gh(self) -> int:
        """Public offset added with the noise of the g+ and h slots."""
        return 1 << max(1, math.ceil(math.log2(NOISE_OFFSET_SIGMAS * self.sigma_gh + 1)))

    @property
    def offset_count(self) -> int:
        """Public offset added with the noise of the count slot."""
        return 1 << max(1, math.ceil(math.log2(NOISE_OFFSET_SIGMAS * self.sigma_count + 1)))

    @property
    def headroom_bits(self) -> int:
        """Extra bits a noisy slot may need beyond an exact sum."""
        return max(self.offset_gh, self.offset_count).bit_length() + 1

    def to_dict(self) -> dict[str, float]:
        """JSON-serialisable form."""
        return {"sigma_gh": self.sigma_gh, "sigma_count": self.sigma_count}


@dataclass(frozen=True)
class RowLayout:
    """Slot widths of one encrypted row and of sums of up to ``max_rows`` rows."""

    max_rows: int
    noise: NoiseSpec | None = None

    @property
    def _extra(self) -> int:
        return self.noise.headroom_bits if self.noise else 0

    @property
    def count_bits(self) -> int:
        """Bits of the count slot."""
        return int(self.max_rows).bit_length() + 1 + self._extra

    @property
    def h_bits(self) -> int:
        """Bits of the hessian slot (h <= 2^30 per row)."""
        return PRECISION_BITS - 2 + int(self.max_rows).bit_length() + 1 + self._extra

    @property
    def gneg_bits(self) -> int:
        """Bits of the negative-gradient slot (never noisy)."""
        return PRECISION_BITS + int(self.max_rows).bit_length() + 1

    @property
    def gpos_bits(self) -> int:
        """Bits of the positive-gradient slot."""
        return self.gneg_bits + self._extra

    @property
    def sum_bits(self) -> int:
        """Width of one sum (all four slots)."""
        return self.gpos_bits + self.gneg_bits + self.h_bits + self.count_bits

    def _compose(self, gpos: int, gneg: int, h: int, count: int) -> int:
        value = gpos
        value = (value << self.gneg_bits) | gneg
        value = (value << self.h_bits) | h
        return (value << self.count_bits) | count

    def encode(self, g: IntArray, h: IntArray) -> list[int]:
        """Plaintexts of rows (validated: |g| <= 2^32, 0 <= h <= 2^30)."""
        limit = 1 << PRECISION_BITS
        if g.size and (np.abs(g).max() > limit or h.min() < 0 or h.max() > limit >> 2):
            raise ProtocolError("gradients outside the fixed-point range; refusing to encrypt")
        return [
            self._compose(max(gi, 0), max(-gi, 0), hi, 1)
            for gi, hi in zip(g.tolist(), h.tolist(), strict=True)
        ]

    def noise_plaintext(self, rng: random.Random) -> int:
        """One draw of offset noise for a sum (g+, h and count slots), as a plaintext."""
        if self.noise is None:
            raise ProtocolError("this layout carries no noise")
        spec = self.noise
        n_g = spec.offset_gh + round(rng.gauss(0.0, spec.sigma_gh))
        n_h = spec.offset_gh + round(rng.gauss(0.0, spec.sigma_gh))
        n_c = spec.offset_count + round(rng.gauss(0.0, spec.sigma_count))
        if min(n_g, n_h, n_c) < 0:
            raise ProtocolError("noise draw beyond its offset (probability < 1e-300)")
        return self._compose(n_g, 0, n_h, n_c)

    def decode(self, m: int) -> tuple[int, int, int]:
        """``(G, H, count)`` of a sum; :class:`TamperedSumError` if impossible."""
        count = m & ((1 << self.count_bits) - 1)
        m >>= self.count_bits
        h_sum = m & ((1 << self.h_bits) - 1)
        m >>= self.h_bits
        g_neg = m & ((1 << self.gneg_bits) - 1)
        g_pos = m >> self.gneg_bits
        limit = 1 << PRECISION_BITS
        if self.noise is not None:
            off_gh, off_c = self.noise.offset_gh, self.noise.offset_count
            g_pos -= off_gh
            h_sum -= off_gh
            count -= off_c
            if (
                not -off_c <= count <= self.max_rows + off_c
                or not -off_gh <= g_pos <= limit * self.max_rows + off_gh
                or not -off_gh <= h_sum <= (limit >> 2) * self.max_rows + off_gh
                or g_neg > limit * self.max_rows
            ):
                raise TamperedSumError(
                    "a decrypted noisy histogram sum is out of range: wrong key or tampering"
                )
            return g_pos - g_neg, h_sum, count
        if (
            count > self.max_rows
            or g_pos >> self.gneg_bits
            or h_sum > (limit >> 2) * count
            or g_pos > limit * count
            or g_neg > limit * count
        ):
            raise TamperedSumError(
                "a decrypted histogram sum is out of range: it was encrypted under another key "
                "or altered in transit"
            )
        return g_pos - g_neg, h_sum, count


def scale() -> float:
    """Fixed-point units per unit of gradient (``2^32``)."""
    return float(1 << PRECISION_BITS)


class BankCipher:
    """What only the key holder does: encrypt gradients, decrypt histogram sums."""

    def __init__(self, keys: KeyPair, layout: RowLayout) -> None:
        self.keys = keys
        self.layout = layout
        self.backend = keys.backend
        try:
            self.packer = self.backend.sum_packer(keys.public, layout.sum_bits)
        except packing.PackingError as exc:
            raise ProtocolError(
                f"{keys.public.key_bits}-bit {keys.scheme.name} keys cannot hold sums over "
                f"{layout.max_rows} rows ({exc})"
            ) from exc
        self.last_decryptions = 0

    @property
    def fingerprint(self) -> str:
        """Short identifier of the public key."""
        return self.keys.fingerprint

    def encrypt_gradients(
        self, g: IntArray, h: IntArray, factors: Sequence[int] = ()
    ) -> npt.NDArray[np.uint8]:
        """Encrypt every row's slots; ciphertexts as a byte matrix for the wire.

        ``factors``: randomness made ahead for the first rows
        (:class:`secure_agg.precompute.RandomnessPool`), one per row and used here only; the
        remaining rows are encrypted from scratch. Either way a row's ciphertext has the
        distribution of the scheme's key-holder encryption.
        """
        plaintexts = self.layout.encode(g, h)
        k = min(len(factors), len(plaintexts))
        private = self.keys.private
        ciphertexts = (
            self.backend.encrypt_with_factors(private, plaintexts[:k], factors[:k]) if k else []
        )
        if k < len(plaintexts) or not plaintexts:
            ciphertexts += self.backend.encrypt_private(private, plaintexts[k:])
        return self.backend.to_array(self.keys.public, ciphertexts)

    def decrypt_sums(self, packed: npt.NDArray[Any], n_sums: int) -> IntArray:
        """Decrypt packed histogram sums into an (n_sums, 3) array of (G, H, count)."""
        ciphertexts = self.backend.from_array(self.keys.public, packed)
        if len(ciphertexts) != self.packer.n_packed(n_sums):
            raise ProtocolError(f"{len(ciphertexts)} packed ciphertexts cannot hold {n_sums} sums")
        try:
            plaintexts = self.backend.decrypt(self.keys.private, ciphertexts)
        except ou.PlaintextOverflowError as exc:
            raise TamperedSumError(
                "packed histogram sums do not decode: encrypted under another key or altered"
            ) from exc
        self.last_decryptions = len(ciphertexts)
        try:
            values = self.packer.unpack(plaintexts, n_sums)
        except packing.PackingError as exc:
            raise TamperedSumError(
                "packed histogram sums do not decode: encrypted under another key or altered"
            ) from exc
        return np.array([self.layout.decode(v) for v in values], dtype=np.int64).reshape(-1, 3)


class PlatformCipher:
    """What a platform can do with the bank's public key: add, noise and pack, never decrypt.

    The key is of any scheme SecureBoost runs with (:data:`~models.secureboost.params.HE_SCHEMES`)
    that the platform's own policy allows; its scheme is read from the key, not from the bank.
    """

    def __init__(self, public: Any, layout: RowLayout, backend: HEBackend | None = None) -> None:
        self._public = public
        self.layout = layout
        self.backend = backend or get_scheme(DEFAULT_SCHEME).backend

    @classmethod
    def from_public_bytes(
        cls,
        raw: object,
        *,
        key_bits: int,
        max_rows: int,
        noise: NoiseSpec | None = None,
        allow_insecure_test_keys: bool = False,
    ) -> PlatformCipher:
        """Load the bank's public key (of the size the job demands) and its row layout."""
        if not isinstance(raw, bytes):
            raise ProtocolError("public key must be bytes")
        try:
            scheme = scheme_of_public_key(raw)
        except ValueError as exc:
            raise ProtocolError(f"the bank's public key: {exc}") from None
        public = scheme.backend.public_from_bytes(
            raw, allow_insecure_test_keys=allow_insecure_test_keys
        )
        if public.key_bits < key_bits:
            raise ProtocolError(
                f"the bank's key has {public.key_bits} bits but the job demands {key_bits}"
            )
        return cls(public, RowLayout(max_rows, noise), scheme.backend)

    @property
    def fingerprint(self) -> str:
        """Short identifier of the public key."""
        return str(self._public.fingerprint)

    def group_sums(
        self, gh: npt.NDArray[Any], groups: npt.NDArray[np.integer[Any]], n_groups: int
    ) -> list[list[int]]:
        """Encrypted per-group sums for every feature column of ``groups`` (-1 rows skipped)."""
        ciphertexts = self.backend.from_array(self._public, gh)
        return self.backend.sum_groups_many(self._public, ciphertexts, groups, n_groups)

    def binned_sums(
        self,
        gh: npt.NDArray[Any],
        bins: npt.NDArray[Any],
        slots: npt.NDArray[Any],
        width: int,
        n_groups: int,
    ) -> list[list[int]]:
        """:meth:`group_sums` of the groups ``slot * width + bin`` (rows with slot -1 skipped).

        The bins (fixed for the job) and the ciphertexts (fixed for the tree) go to a remote
        compute backend once; each level sends only the rows' node slots
        (:func:`secure_agg.paillier.sum_binned_many`).
        """
        ciphertexts = self.backend.from_array(self._public, gh)
        return self.backend.sum_binned_many(self._public, ciphertexts, bins, slots, width, n_groups)

    def add_sums(self, a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
        """Per column and group, the encrypted sum of two :meth:`group_sums` results."""
        if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b, strict=True)):
            raise ProtocolError("partial histogram sums of different shapes cannot be added")
        add = self.backend.add
        return [
            [add(self._public, x, y) for x, y in zip(col_a, col_b, strict=True)]
            for col_a, col_b in zip(a, b, strict=True)
        ]

    def sums_to_array(self, sums: list[list[int]]) -> npt.NDArray[np.uint8]:
        """:meth:`group_sums` results as a byte matrix (columns one after the other)."""
        return self.backend.to_array(self._public, [c for column in sums for c in column])

    def sums_from_array(self, array: npt.NDArray[Any], n_columns: int) -> list[list[int]]:
        """Parse :meth:`sums_to_array` of ``n_columns`` equally long columns."""
        flat = self.backend.from_array(self._public, array)
        if n_columns < 1 or len(flat) % n_columns:
            raise ProtocolError(f"{len(flat)} kept sums do not split into {n_columns} columns")
        size = len(flat) // n_columns
        return [flat[i * size : (i + 1) * size] for i in range(n_columns)]

    def add_noise(self, sums: list[int]) -> list[int]:
        """Add an encryption of fresh offset Gaussian noise to every sum (DP mode)."""
        rng = random.SystemRandom()
        noise = self.backend.encrypt(self._public, [self.layout.noise_plaintext(rng) for _ in sums])
        return [self.backend.add(self._public, c, n) for c, n in zip(sums, noise, strict=True)]

    @property
    def public(self) -> Any:
        """The bank's public key (the platform's own re-randomisation pool is keyed by it)."""
        return self._public

    @property
    def factor_bytes(self) -> int:
        """Bytes of one re-randomisation factor ``y^n`` (a ciphertext's modulus)."""
        return int(self._public.ciphertext_bytes)

    def n_packed(self, n_sums: int) -> int:
        """Packed ciphertexts (each re-randomised once) that :meth:`pack` makes of ``n_sums``."""
        return self.backend.sum_packer(self._public, self.layout.sum_bits).n_packed(n_sums)

    def packs_per_tree(self, sums_per_node: int, max_depth: int) -> int:
        """Packed ciphertexts of one tree: the re-randomisation factors it consumes.

        The bank asks for the root's histograms, then at each further level below ``max_depth``
        for the smaller child of each split (the sibling is the parent minus it): at most
        ``2^(d-1)`` nodes at depth ``d``. Each level packs ``nodes × sums_per_node`` sums
        (``sums_per_node`` = Σ over features of bins + 1), ``capacity`` per ciphertext.
        """
        nodes = [1] + [2 ** (depth - 1) for depth in range(1, max(1, int(max_depth)))]
        return sum(self.n_packed(k * int(sums_per_node)) for k in nodes)

    def pack(self, sums: list[int], factors: Sequence[int] = ()) -> npt.NDArray[np.uint8]:
        """Pack several sums per ciphertext (the bank decrypts once per pack), re-randomised.

        ``factors``: the platform's own ``y^n`` made ahead
        (:class:`secure_agg.precompute.RandomnessPool` with ``own``), one per packed ciphertext
        from the first and used here only; the other packs get fresh ones.
        """
        packed = self.backend.pack(self._public, sums, self.layout.sum_bits, factors)
        return self.backend.to_array(self._public, packed)


__all__ = [
    "NOISE_OFFSET_SIGMAS",
    "BankCipher",
    "KeyPair",  # moved to models.vertical.keys; tests use it from here
    "NoiseSpec",
    "PlatformCipher",
    "RowLayout",
    "TamperedSumError",
    "scale",
]
