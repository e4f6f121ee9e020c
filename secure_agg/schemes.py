"""The additively homomorphic schemes of :mod:`secure_agg`: one registry, one default.

A job's ``crypto.scheme`` and a node policy's ``crypto.allowed_schemes`` name schemes from
:data:`SCHEMES`; :data:`DEFAULT_SCHEME` is the single source of the default. Each scheme's
operations sit behind one interface (:class:`secure_agg.backends.HEBackend`). Paillier
(:mod:`secure_agg.paillier`) is the default: every vertical protocol runs with it and its
assumptions are the better studied. Okamoto–Uchiyama (:mod:`secure_agg.ou`) is faster per
operation but rests on stronger assumptions and holds fewer packed values per ciphertext (see its
module docstring and ``benchmarks/he_schemes.py``), so a node must opt in to it by name; which
protocols run with which scheme is each model type's ``he_schemes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, get_args

from secure_agg.backends import OU, PAILLIER, HEBackend

#: Names a job or a policy may use (pydantic validates configs against this).
SchemeName = Literal["paillier", "ou"]

#: The scheme of a job that names none, and the only one a node allows unless its policy says so.
DEFAULT_SCHEME: SchemeName = "paillier"


class UnknownSchemeError(ValueError):
    """A scheme name that is not in :data:`SCHEMES`."""


@dataclass(frozen=True)
class HEScheme:
    """What a scheme is, for configs, policies and reports.

    Attributes
    ----------
    name : str
        The name jobs and policies use.
    module : str
        The package that implements it.
    reference : str
        The paper it follows.
    assumptions : str
        What its IND-CPA security rests on, as implemented here.
    backend : HEBackend
        Its operations behind one interface (:mod:`secure_agg.backends`).
    """

    name: SchemeName
    module: str
    reference: str
    assumptions: str
    backend: HEBackend


SCHEMES: Mapping[str, HEScheme] = MappingProxyType(
    {
        "paillier": HEScheme(
            name="paillier",
            module="secure_agg.paillier",
            reference="Paillier, Eurocrypt 1999; fast encryption: Damgård, Jurik & Nielsen 2010",
            assumptions="decisional composite residuosity; half-length (k/2-bit) exponents",
            backend=PAILLIER,
        ),
        "ou": HEScheme(
            name="ou",
            module="secure_agg.ou",
            reference="Okamoto & Uchiyama, Eurocrypt 1998",
            assumptions="p-subgroup assumption; short (2 x security-level bit) exponents",
            backend=OU,
        ),
    }
)

if tuple(SCHEMES) != get_args(SchemeName):  # pragma: no cover - a programming error
    raise RuntimeError("SchemeName and SCHEMES must list the same schemes")


def get_scheme(name: str) -> HEScheme:
    """The scheme called ``name``.

    Raises
    ------
    UnknownSchemeError
        Naming the known schemes.
    """
    try:
        return SCHEMES[name]
    except KeyError:
        raise UnknownSchemeError(
            f"unknown homomorphic scheme {name!r}; known: {', '.join(SCHEMES)}"
        ) from None


def scheme_of_public_key(raw: bytes) -> HEScheme:
    """The scheme of a serialised public key, from its tag (the key itself is not parsed).

    Raises
    ------
    UnknownSchemeError
        If no scheme's tag starts ``raw``.
    """
    data = bytes(raw)
    for scheme in SCHEMES.values():
        if data.startswith(scheme.backend.public_key_tag):
            return scheme
    raise UnknownSchemeError(
        f"not a serialised public key of a known scheme ({', '.join(SCHEMES)})"
    )
