"""The closed vocabularies that specs, authorizations and jobs share.

Feature groups and purposes are matched literally between a feature-set spec, an enterprise's
authorization and a job, so a typo would silently exclude (or worse, include) data; every
governance input is checked against these tuples and the error lists the allowed values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from lab.governance.errors import VocabularyError

#: Published feature groups: the platform's groups (from the policy texts on SME credit
#: information: registration, tax, social insurance and housing fund, utilities, customs,
#: judicial and administrative, the five "quality financing credit enhancement" groups, key
#: personnel) and the banks' own groups.
GROUPS: tuple[str, ...] = (
    "registration",
    "tax",
    "social_insurance",
    "utilities",
    "customs",
    "judicial",
    "quality_credit",
    "quality_management",
    "quality_brand",
    "quality_foundation",
    "quality_innovation",
    "key_personnel",
    "loan",
    "relationship",
    "bureau",
)

Sensitivity = Literal["public", "internal", "trade_secret", "personal"]
#: ``trade_secret`` and ``personal`` data need the enterprise's authorization; ``personal``
#: data also needs the individual's explicit consent.
SENSITIVITIES: tuple[Sensitivity, ...] = ("public", "internal", "trade_secret", "personal")

#: Uses of credit information the platform may allow (pre-loan screening, approval, post-loan
#: monitoring, and model development for them).
PURPOSES: tuple[str, ...] = (
    "credit_risk_modeling",
    "pre_loan_screening",
    "loan_approval",
    "post_loan_monitoring",
)

ColumnType = Literal["numeric", "integer", "boolean", "categorical"]
COLUMN_TYPES: tuple[ColumnType, ...] = ("numeric", "integer", "boolean", "categorical")

#: Names of banks, feature sets and versions: letters, digits, ``_``, ``-``, ``.``.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_group(group: str) -> str:
    """Return ``group`` if it is a known feature group.

    Raises
    ------
    VocabularyError
        Naming the value and the allowed groups.
    """
    if group not in GROUPS:
        raise VocabularyError(f"unknown feature group {group!r}; use one of {', '.join(GROUPS)}")
    return group


def check_groups(groups: Iterable[str]) -> frozenset[str]:
    """Return the groups as a frozenset after checking each one (see :func:`check_group`)."""
    return frozenset(check_group(g) for g in groups)


def check_purpose(purpose: str) -> str:
    """Return ``purpose`` if it is a known purpose.

    Raises
    ------
    VocabularyError
        Naming the value and the allowed purposes.
    """
    if purpose not in PURPOSES:
        raise VocabularyError(f"unknown purpose {purpose!r}; use one of {', '.join(PURPOSES)}")
    return purpose


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a valid bank, feature-set or version name.

    Raises
    ------
    VocabularyError
        If it is empty or holds characters other than letters, digits, ``_``, ``-``, ``.``.
    """
    if not NAME_PATTERN.fullmatch(value):
        raise VocabularyError(
            f"invalid {what} {value!r}; use 1-128 letters, digits, '_', '-' or '.', starting "
            "with a letter or digit"
        )
    return value


def parse_ref(ref: str, *, version_required: bool = True) -> tuple[str, str | None]:
    """Split a feature-set reference ``name@version`` into its parts.

    Parameters
    ----------
    ref : str
        ``name@version`` (or ``name`` alone when ``version_required`` is false).
    version_required : bool
        Refuse a reference without ``@version``.

    Returns
    -------
    tuple of (str, str or None)
        The name and the version (``None`` if absent and allowed).

    Raises
    ------
    FeatureSetRefError
        If the reference is malformed.
    """
    from lab.governance.errors import FeatureSetRefError

    name, sep, version = ref.strip().partition("@")
    if not sep and not version_required:
        version_or_none: str | None = None
    elif not sep:
        raise FeatureSetRefError(
            f"feature set {ref!r} has no version; name it as name@version, e.g. {ref.strip()}@1"
        )
    else:
        version_or_none = version
    try:
        check_name(name, "feature-set name")
        if version_or_none is not None:
            check_name(version_or_none, "feature-set version")
    except VocabularyError as exc:
        raise FeatureSetRefError(f"feature set {ref!r}: {exc}") from exc
    return name, version_or_none


def format_ref(name: str, version: str) -> str:
    """Return ``name@version``."""
    return f"{name}@{version}"
