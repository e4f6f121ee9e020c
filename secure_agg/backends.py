"""One interface over the additively homomorphic schemes, for protocols that may use either.

A protocol that sums encrypted values (SecureBoost's histograms) needs the same few operations
from Paillier (:mod:`secure_agg.paillier`) and Okamoto–Uchiyama (:mod:`secure_agg.ou`):
:class:`HEBackend` names them and :data:`PAILLIER` / :data:`OU` implement them by delegating to
each package (no arithmetic here). Keys stay each package's own classes (they share
``key_bits``, ``fingerprint``, ``to_bytes`` and, for private keys, ``public_key`` and
``to_secret_bytes``); :mod:`secure_agg.schemes` maps a scheme name to its backend.

Both schemes' encryption is ``(plaintext part) · (randomness part)``:
:meth:`HEBackend.random_factors` makes the randomness part ahead (Paillier: ``h_s^a mod n²``,
all of the cost; OU: ``h^r mod n``, about 60% of it) and
:meth:`HEBackend.encrypt_with_factors` finishes each ciphertext once its plaintext is known;
:mod:`secure_agg.precompute` keeps such factors for the key holder. A packer's own
re-randomisation factors (:meth:`HEBackend.own_factors`) are made ahead the same way.

Packing differs in one number: the plaintext space that packed sums must fit
(:meth:`HEBackend.sum_packer`): a Paillier key of ``k`` bits carries ``k`` bits, an OU key
``⌊k/3⌋ - 1`` (see :func:`secure_agg.ou.packing_key_bits`). Packs are re-randomised with the
packer's own randomness (:func:`secure_agg.ou.rerandomize_own`,
:func:`secure_agg.paillier.rerandomize_own`), not with the key holder's base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from secure_agg import ou, paillier
from secure_agg.ou.keys import PUBLIC_KEY_TAG as OU_PUBLIC_KEY_TAG
from secure_agg.packing import SumPacker
from secure_agg.paillier import kernels as paillier_kernels
from secure_agg.paillier.keys import PUBLIC_KEY_TAG as PAILLIER_PUBLIC_KEY_TAG


class HEBackend(Protocol):
    """What a protocol does with an additively homomorphic scheme (keys typed ``Any``)."""

    name: str
    #: Leading bytes of this scheme's serialised public keys.
    public_key_tag: bytes

    def generate_keypair(
        self, key_bits: int, *, allow_insecure_test_keys: bool = False
    ) -> tuple[Any, Any]:
        """A fresh ``(public, private)`` pair; the 2048-bit floor unless test keys are allowed."""

    def public_from_bytes(self, raw: bytes, *, allow_insecure_test_keys: bool = False) -> Any:
        """Parse a serialised public key of this scheme (refusing another scheme's tag)."""

    def private_from_secret_bytes(self, public: Any, raw: bytes) -> Any:
        """Restore a private key kept with ``to_secret_bytes`` in its owner's own store."""

    def sum_packer(self, public: Any, bits_per_value: int) -> SumPacker:
        """The packer whose capacity keeps packed sums within this key's plaintext space."""

    def encrypt_private(self, private: Any, plaintexts: Sequence[int]) -> list[int]:
        """Encrypt as the key holder (Paillier: CRT tables; OU: the public path)."""

    def encrypt(self, public: Any, plaintexts: Sequence[int]) -> list[int]:
        """Encrypt with the public key."""

    def random_factors(self, private: Any, count: int, *, workers: int | None = None) -> list[int]:
        """Fresh secret randomness factors of the key holder's encryption (made ahead)."""

    def encrypt_with_factors(
        self, private: Any, plaintexts: Sequence[int], factors: Sequence[int]
    ) -> list[int]:
        """Encrypt, one factor of :meth:`random_factors` per plaintext (each used once)."""

    def add(self, public: Any, c1: int, c2: int) -> int:
        """A ciphertext of the sum (not re-randomised)."""

    def sum_groups_many(
        self, public: Any, ciphertexts: Sequence[int], groups: npt.NDArray[Any], n_groups: int
    ) -> list[list[int]]:
        """Per column, the homomorphic sum of the ciphertexts per group (the histogram kernel)."""

    def sum_binned_many(
        self,
        public: Any,
        ciphertexts: Sequence[int],
        bins: npt.NDArray[Any],
        slots: npt.NDArray[Any],
        width: int,
        n_groups: int,
    ) -> list[list[int]]:
        """:meth:`sum_groups_many` of the groups ``slot * width + bin`` (-1 slot: no group)."""

    def own_factors(self, public: Any, count: int, *, workers: int | None = None) -> list[int]:
        """The packer's own re-randomisation factors ``y^n`` made ahead (``own_factors``)."""

    def pack(
        self,
        public: Any,
        ciphertexts: Sequence[int],
        bits_per_value: int,
        factors: Sequence[int] = (),
    ) -> list[int]:
        """Pack sums :meth:`sum_packer` ``.capacity`` at a time, re-randomised by the packer.

        For a party that sends the packs to the key holder: each packed ciphertext is
        re-randomised with the packer's own randomness (``rerandomize_own``: ``c · y^n``, ``y``
        uniform in ``Z*_n``), never with a base from the key, so the key holder cannot switch
        the re-randomisation off by the key it chose. ``factors``: ``y^n`` the packer made ahead
        (:meth:`own_factors`), one per packed ciphertext from the first, each used once; the
        remaining packs get fresh ones.
        """

    def to_array(self, public: Any, ciphertexts: Sequence[int]) -> npt.NDArray[Any]:
        """Ciphertexts as a ``uint8`` matrix for the wire."""

    def from_array(self, public: Any, array: npt.NDArray[Any]) -> list[int]:
        """Parse :meth:`to_array`, checking shape and range."""

    def decrypt(self, private: Any, ciphertexts: Sequence[int]) -> list[int]:
        """Decrypt (OU refuses results outside its plaintext space)."""

    def forget_private_tables(self) -> None:
        """Drop this process's key-derived tables (the end of a protocol)."""


class _Paillier:
    name = "paillier"
    public_key_tag = PAILLIER_PUBLIC_KEY_TAG

    def generate_keypair(
        self, key_bits: int, *, allow_insecure_test_keys: bool = False
    ) -> tuple[Any, Any]:
        return paillier.generate_keypair(
            key_bits, allow_insecure_test_keys=allow_insecure_test_keys
        )

    def public_from_bytes(self, raw: bytes, *, allow_insecure_test_keys: bool = False) -> Any:
        return paillier.PublicKey.from_bytes(raw, allow_insecure_test_keys=allow_insecure_test_keys)

    def private_from_secret_bytes(self, public: Any, raw: bytes) -> Any:
        return paillier.PrivateKey.from_secret_bytes(public, raw)

    def sum_packer(self, public: Any, bits_per_value: int) -> SumPacker:
        return SumPacker(bits_per_value, public.key_bits)

    def encrypt_private(self, private: Any, plaintexts: Sequence[int]) -> list[int]:
        return paillier.encrypt_many_private(private, plaintexts)

    def encrypt(self, public: Any, plaintexts: Sequence[int]) -> list[int]:
        return paillier.encrypt_many(public, plaintexts)

    def random_factors(self, private: Any, count: int, *, workers: int | None = None) -> list[int]:
        return paillier.random_factors(private, count, workers=workers)

    def encrypt_with_factors(
        self, private: Any, plaintexts: Sequence[int], factors: Sequence[int]
    ) -> list[int]:
        return paillier.encrypt_with_factors(private.public_key, plaintexts, factors)

    def add(self, public: Any, c1: int, c2: int) -> int:
        return paillier.add(public, c1, c2)

    def sum_groups_many(
        self, public: Any, ciphertexts: Sequence[int], groups: npt.NDArray[Any], n_groups: int
    ) -> list[list[int]]:
        return paillier.sum_groups_many(public, ciphertexts, groups, n_groups)

    def sum_binned_many(
        self,
        public: Any,
        ciphertexts: Sequence[int],
        bins: npt.NDArray[Any],
        slots: npt.NDArray[Any],
        width: int,
        n_groups: int,
    ) -> list[list[int]]:
        return paillier.sum_binned_many(public, ciphertexts, bins, slots, width, n_groups)

    def own_factors(self, public: Any, count: int, *, workers: int | None = None) -> list[int]:
        return paillier.own_factors(public, count, workers=workers)

    def pack(
        self,
        public: Any,
        ciphertexts: Sequence[int],
        bits_per_value: int,
        factors: Sequence[int] = (),
    ) -> list[int]:
        packed = self.sum_packer(public, bits_per_value).pack(
            public, ciphertexts, rerandomize=False
        )
        return paillier.rerandomize_own(public, packed, factors=factors)

    def to_array(self, public: Any, ciphertexts: Sequence[int]) -> npt.NDArray[Any]:
        return paillier.ciphertexts_to_array(public, ciphertexts)

    def from_array(self, public: Any, array: npt.NDArray[Any]) -> list[int]:
        return paillier.ciphertexts_from_array(public, array)

    def decrypt(self, private: Any, ciphertexts: Sequence[int]) -> list[int]:
        return paillier.decrypt_many(private, ciphertexts)

    def forget_private_tables(self) -> None:
        paillier.forget_private_tables()


class _OU:
    name = "ou"
    public_key_tag = OU_PUBLIC_KEY_TAG

    def generate_keypair(
        self, key_bits: int, *, allow_insecure_test_keys: bool = False
    ) -> tuple[Any, Any]:
        return ou.generate_keypair(key_bits, allow_insecure_test_keys=allow_insecure_test_keys)

    def public_from_bytes(self, raw: bytes, *, allow_insecure_test_keys: bool = False) -> Any:
        return ou.PublicKey.from_bytes(raw, allow_insecure_test_keys=allow_insecure_test_keys)

    def private_from_secret_bytes(self, public: Any, raw: bytes) -> Any:
        return ou.PrivateKey.from_secret_bytes(public, raw)

    def sum_packer(self, public: Any, bits_per_value: int) -> SumPacker:
        return SumPacker(bits_per_value, ou.packing_key_bits(public))

    def encrypt_private(self, private: Any, plaintexts: Sequence[int]) -> list[int]:
        return ou.encrypt_many(private.public_key, plaintexts)

    def encrypt(self, public: Any, plaintexts: Sequence[int]) -> list[int]:
        return ou.encrypt_many(public, plaintexts)

    def random_factors(self, private: Any, count: int, *, workers: int | None = None) -> list[int]:
        return ou.random_factors(private.public_key, count, workers=workers)

    def encrypt_with_factors(
        self, private: Any, plaintexts: Sequence[int], factors: Sequence[int]
    ) -> list[int]:
        return ou.encrypt_with_factors(private.public_key, plaintexts, factors)

    def add(self, public: Any, c1: int, c2: int) -> int:
        return ou.add(public, c1, c2)

    def sum_groups_many(
        self, public: Any, ciphertexts: Sequence[int], groups: npt.NDArray[Any], n_groups: int
    ) -> list[list[int]]:
        return ou.sum_groups_many(public, ciphertexts, groups, n_groups)

    def sum_binned_many(
        self,
        public: Any,
        ciphertexts: Sequence[int],
        bins: npt.NDArray[Any],
        slots: npt.NDArray[Any],
        width: int,
        n_groups: int,
    ) -> list[list[int]]:
        # OU's batches stay local (secure_agg.compute): the group ids are made here.
        groups = paillier_kernels.binned_groups(np.asarray(bins), np.asarray(slots), width)
        return ou.sum_groups_many(public, ciphertexts, groups, n_groups)

    def own_factors(self, public: Any, count: int, *, workers: int | None = None) -> list[int]:
        return ou.own_factors(public, count, workers=workers)

    def pack(
        self,
        public: Any,
        ciphertexts: Sequence[int],
        bits_per_value: int,
        factors: Sequence[int] = (),
    ) -> list[int]:
        capacity = self.sum_packer(public, bits_per_value).capacity
        packed = ou.pack_sums(public, ciphertexts, bits_per_value, capacity, rerandomize=False)
        return ou.rerandomize_own(public, packed, factors=factors)

    def to_array(self, public: Any, ciphertexts: Sequence[int]) -> npt.NDArray[Any]:
        return ou.ciphertexts_to_array(public, ciphertexts)

    def from_array(self, public: Any, array: npt.NDArray[Any]) -> list[int]:
        return ou.ciphertexts_from_array(public, array)

    def decrypt(self, private: Any, ciphertexts: Sequence[int]) -> list[int]:
        return ou.decrypt_many(private, ciphertexts)

    def forget_private_tables(self) -> None:
        """OU keeps no key-derived tables (its tables are public)."""


#: The Paillier backend (DJN fast encryption, CRT for the key holder).
PAILLIER: HEBackend = _Paillier()
#: The Okamoto–Uchiyama backend.
OU: HEBackend = _OU()
