"""Unified social credit codes (统一社会信用代码, GB 32100-2015).

An 18-character code made of

============  =====  ==================================================
positions     size   meaning
============  =====  ==================================================
1             1      registration authority (``9`` = market regulation)
2             1      entity type within that authority (``1`` enterprise,
                     ``2`` individual business, ``3`` farmers' cooperative)
3-8           6      administrative division of the registering office
                     (GB/T 2260 digits)
9-17          9      organization code (GB 11714): 8 body characters and
                     their own check character
18            1      check character over positions 1-17
============  =====  ==================================================

Every character comes from the 31-character alphabet
``0123456789ABCDEFGHJKLMNPQRTUWXY`` (no I, O, Z, S, V).

Check characters
----------------
* GB 32100: with ``v(c)`` the index of ``c`` in the alphabet and weights
  ``3**(i-1) mod 31`` = 1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24,
  10, 30, 28, the check character is ``alphabet[(31 - sum mod 31) mod 31]``.
* GB 11714: with ``v(c)`` the digit value or ``ord(c) - 55`` for letters
  (A = 10 ... Z = 35, the full Latin alphabet) and weights 3, 7, 9, 10, 5, 8,
  4, 2, the check value is ``11 - sum mod 11``, written ``X`` for 10 and
  ``0`` for 11.

Codes are public and enumerable (about 1.6e8 registered market entities),
so a salted hash of a code is *not* a private set intersection.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from features.synth import divisions as _div

__all__ = [
    "ALPHABET",
    "GB11714_WEIGHTS",
    "REGISTRATION_AUTHORITIES",
    "USCC_WEIGHTS",
    "build_uscc",
    "generate_uscc",
    "is_valid_uscc",
    "organization_check_char",
    "uscc_check_char",
]

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters allowed in a unified social credit code."""

USCC_WEIGHTS: tuple[int, ...] = tuple(pow(3, i, 31) for i in range(17))
"""GB 32100 weights for positions 1-17 (``3**(i-1) mod 31``)."""

GB11714_WEIGHTS: tuple[int, ...] = (3, 7, 9, 10, 5, 8, 4, 2)
"""GB 11714 weights for the 8 body characters of an organization code."""

REGISTRATION_AUTHORITIES = "123456789ANY"
"""Registration-authority codes defined by GB 32100 (position 1).

1 institutional staffing, 2 foreign affairs, 3 justice, 4 culture,
5 civil affairs, 6 tourism, 7 religious affairs, 8 trade unions,
9 market regulation (formerly industry and commerce), A central military
commission staffing, N agriculture, Y other.
"""

_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_ALPHA_BYTES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
# GB 11714 value of each USCC alphabet character (letters keep their full-alphabet value).
_VALUE_11714 = np.array([int(c, 36) for c in ALPHABET], dtype=np.int64)
_W31 = np.array(USCC_WEIGHTS, dtype=np.int64)
_W11 = np.array(GB11714_WEIGHTS, dtype=np.int64)
_ORG_CHECK = "0123456789X0"  # index = 11 - (sum mod 11), i.e. 1..11
_ORG_CHECK_IDX = np.array([_INDEX[c] for c in _ORG_CHECK], dtype=np.int64)
_DIGITS = np.arange(10, dtype=np.int64)
_NEW_FORMAT_LEAD = (_INDEX["M"], _INDEX["A"])


def organization_check_char(body: str) -> str:
    """Return the GB 11714 check character of an 8-character organization-code body.

    Parameters
    ----------
    body : str
        Eight characters, digits or capital letters.

    Returns
    -------
    str
        ``"0"``-``"9"`` or ``"X"``.

    Raises
    ------
    ValueError
        If ``body`` is not 8 digits or capital Latin letters.
    """
    if len(body) != 8 or not all(c.isdigit() or "A" <= c <= "Z" for c in body):
        raise ValueError(f"organization-code body must be 8 digits/capitals, got {body!r}")
    total = sum(int(c, 36) * w for c, w in zip(body, GB11714_WEIGHTS, strict=True))
    return _ORG_CHECK[11 - total % 11]


def uscc_check_char(prefix: str) -> str:
    """Return the GB 32100 check character for the first 17 characters of a code.

    Parameters
    ----------
    prefix : str
        Seventeen characters of :data:`ALPHABET`.

    Returns
    -------
    str
        One character of :data:`ALPHABET`.

    Raises
    ------
    ValueError
        If ``prefix`` is not 17 characters of the alphabet.
    """
    if len(prefix) != 17 or any(c not in _INDEX for c in prefix):
        raise ValueError(f"need 17 characters of {ALPHABET!r}, got {prefix!r}")
    total = sum(_INDEX[c] * w for c, w in zip(prefix, USCC_WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(code: object) -> bool:
    """Tell whether ``code`` is a well-formed unified social credit code.

    Checks the length, the alphabet, a defined registration authority, six
    division digits, the GB 11714 check character of the organization code
    and the GB 32100 check character. Never raises.

    Parameters
    ----------
    code : object
        Candidate code; anything that is not a ``str`` is invalid. Lower case
        and separators are not accepted (codes are compared verbatim).

    Returns
    -------
    bool
        ``True`` when every check passes.

    Examples
    --------
    >>> is_valid_uscc("91110000600037341L")
    True
    >>> is_valid_uscc("91110000600037341N")
    False
    """
    if not isinstance(code, str) or len(code) != 18:
        return False
    if any(c not in _INDEX for c in code):
        return False
    if code[0] not in REGISTRATION_AUTHORITIES or not code[2:8].isdigit():
        return False
    if organization_check_char(code[8:16]) != code[16]:
        return False
    return uscc_check_char(code[:17]) == code[17]


def build_uscc(
    authority_type: NDArray[np.str_] | list[str],
    division: NDArray[np.int64],
    new_format: NDArray[np.bool_],
    rng: np.random.Generator,
    *,
    max_rounds: int = 50,
) -> NDArray[np.str_]:
    """Build distinct valid codes for entities with known attributes (vectorised).

    Parameters
    ----------
    authority_type : array of str, shape (n,)
        Two-character prefix per entity, e.g. ``"91"`` (enterprise), ``"92"``
        (individual business), ``"93"`` (farmers' cooperative).
    division : array of int, shape (n,)
        Six-digit GB/T 2260 division code of the registering office.
    new_format : array of bool, shape (n,)
        ``True`` for entities first registered after the 2015 reform, whose
        organization code is assigned as ``MA`` + 6 characters; ``False`` for
        older entities that kept an 8-digit legacy organization code.
    rng : numpy.random.Generator
        Source of randomness.
    max_rounds : int, optional
        Redraw rounds allowed to remove duplicate organization codes.

    Returns
    -------
    numpy.ndarray of str, shape (n,)
        Valid codes; organization codes (hence codes) are pairwise distinct.

    Raises
    ------
    ValueError
        On inconsistent shapes or malformed prefixes/divisions.
    RuntimeError
        If duplicates persist after ``max_rounds`` redraws (space exhausted).
    """
    prefix = np.asarray(authority_type, dtype="U2")
    div = np.asarray(division, dtype=np.int64)
    newf = np.asarray(new_format, dtype=bool)
    n = prefix.shape[0]
    if div.shape != (n,) or newf.shape != (n,):
        raise ValueError("authority_type, division and new_format must have the same length")
    if np.any((div < 100000) | (div > 999999)):
        raise ValueError("division codes must be six-digit integers (100000-999999)")
    codes = np.empty((n, 18), dtype=np.int64)
    pre_bytes = prefix.astype("S2").view(np.uint8).reshape(n, 2) if n else np.empty((0, 2))
    for j in range(2):
        col = pre_bytes[:, j]
        idx = np.searchsorted(_ALPHA_BYTES, col)
        idx = np.clip(idx, 0, len(ALPHABET) - 1)
        if np.any(_ALPHA_BYTES[idx] != col):
            raise ValueError("authority_type characters must come from the USCC alphabet")
        codes[:, j] = idx
    if n and np.any(~np.isin(codes[:, 0], [_INDEX[c] for c in REGISTRATION_AUTHORITIES])):
        raise ValueError(f"first character must be one of {REGISTRATION_AUTHORITIES!r}")
    for j in range(6):
        codes[:, 2 + j] = (div // 10 ** (5 - j)) % 10  # digits index themselves
    _draw_bodies(codes, np.arange(n), newf, rng)
    keys = _body_keys(codes)
    for _ in range(max_rounds):
        _, first = np.unique(keys, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        if not dup.any():
            break
        rows = np.flatnonzero(dup)
        _draw_bodies(codes, rows, newf, rng)
        keys[rows] = _body_keys(codes[rows])
    else:
        raise RuntimeError("could not draw distinct organization codes; space exhausted")
    _fill_checks(codes)
    chars = _ALPHA_BYTES[codes]
    return np.ascontiguousarray(chars).view("S18").ravel().astype("U18")


def _draw_bodies(
    codes: NDArray[np.int64],
    rows: NDArray[np.intp],
    new_format: NDArray[np.bool_],
    rng: np.random.Generator,
) -> None:
    """Draw organization-code bodies (positions 9-16) for ``rows`` in place."""
    m = rows.shape[0]
    legacy = rng.integers(0, 10, size=(m, 8))
    new = rng.integers(0, len(ALPHABET), size=(m, 8))
    new[:, 0], new[:, 1] = _NEW_FORMAT_LEAD
    # third character: a digit in practice (a province-level batch number)
    new[:, 2] = rng.integers(1, 10, size=m)
    body = np.where(new_format[rows, None], new, legacy)
    codes[rows, 8:16] = body


def _body_keys(codes: NDArray[np.int64]) -> NDArray[np.int64]:
    """Encode the 8 body characters as one base-31 integer (< 31**8)."""
    key = np.zeros(codes.shape[0], dtype=np.int64)
    for j in range(8, 16):
        key = key * 31 + codes[:, j]
    return key


def _fill_checks(codes: NDArray[np.int64]) -> None:
    """Compute positions 17 (GB 11714) and 18 (GB 32100) in place."""
    s11 = (_VALUE_11714[codes[:, 8:16]] * _W11).sum(axis=1) % 11
    codes[:, 16] = _ORG_CHECK_IDX[11 - s11]
    s31 = (codes[:, :17] * _W31).sum(axis=1) % 31
    codes[:, 17] = (31 - s31) % 31


_OTHER_PREFIXES = ("92", "93", "12", "52", "53", "Y1")
_OTHER_P = np.array([0.70, 0.08, 0.08, 0.06, 0.03, 0.05])


def generate_uscc(
    n: int,
    rng: np.random.Generator,
    *,
    enterprise_share: float = 0.88,
    new_format_share: float = 0.6,
) -> list[str]:
    """Generate ``n`` distinct, valid codes with a realistic mix of attributes.

    Most codes start with ``"91"`` (enterprise registered by market
    regulation); the rest are individual businesses (``92``), farmers'
    cooperatives (``93``), public institutions (``12``), social organizations
    (``52``/``53``) and other (``Y1``). Division codes are real GB/T 2260
    codes of registering offices, weighted by where firms are registered.

    Parameters
    ----------
    n : int
        Number of codes (>= 0). One million takes about a second.
    rng : numpy.random.Generator
        Source of randomness (e.g. ``numpy.random.Generator(numpy.random.PCG64(0))``).
    enterprise_share : float, optional
        Share of codes starting with ``"91"``.
    new_format_share : float, optional
        Share of organization codes in the post-2015 ``MA...`` format.

    Returns
    -------
    list of str
        ``n`` distinct codes, each passing :func:`is_valid_uscc`.

    Raises
    ------
    ValueError
        If ``n`` is negative or a share is outside [0, 1].
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    for name, share in (
        ("enterprise_share", enterprise_share),
        ("new_format_share", new_format_share),
    ):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {share!r}")
    n = int(n)
    is_ent = rng.random(n) < enterprise_share
    other = np.asarray(_OTHER_PREFIXES)[rng.choice(len(_OTHER_PREFIXES), size=n, p=_OTHER_P)]
    prefix = np.where(is_ent, "91", other)
    table = _div.DIVISIONS
    weights = np.array([d.weight for d in table])
    pick = rng.choice(len(table), size=n, p=weights / weights.sum())
    division = np.array([d.code for d in table], dtype=np.int64)[pick]
    new_format = rng.random(n) < new_format_share
    out: list[str] = build_uscc(prefix, division, new_format, rng).tolist()
    return out
