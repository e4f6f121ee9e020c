"""Enterprise id schemes: how both parties normalise ids before aligning them.

Alignment compares ids byte for byte, so both parties must normalise them the same way; the
experiment names one scheme for every party.

``text``
    Strip surrounding whitespace; case matters (the default).
``casefold``
    Strip and case-fold: for id schemes where case carries no meaning.
``uscc``
    The unified social credit code (GB 32100-2015): strip, upper-case (the code alphabet is
    upper case, so case carries no meaning), and check the length, alphabet and both check
    characters. Invalid codes are refused: a typo would silently drop an enterprise.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.synth.uscc import is_valid_uscc

IdScheme = Literal["text", "casefold", "uscc"]
ID_SCHEMES: tuple[IdScheme, ...] = ("text", "casefold", "uscc")


def normalise(stripped: pd.Series, scheme: IdScheme) -> pd.Series:
    """Apply the scheme's case rule to ids that are already stripped."""
    if scheme == "text":
        return stripped
    if scheme == "casefold":
        return stripped.str.casefold()
    if scheme == "uscc":
        return stripped.str.upper()
    raise ValueError(f"unknown id scheme {scheme!r}; use one of {', '.join(ID_SCHEMES)}")


def invalid_positions(ids: npt.NDArray[np.str_], scheme: IdScheme) -> npt.NDArray[np.intp]:
    """Positions of ids the scheme rejects (only ``uscc`` rejects any)."""
    if scheme != "uscc":
        return np.zeros(0, dtype=np.intp)
    ok = np.fromiter((is_valid_uscc(str(code)) for code in ids), dtype=bool, count=len(ids))
    return np.flatnonzero(~ok)
