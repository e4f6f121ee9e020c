"""Unified social credit codes: check characters, validation, vectorised generation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.synth.divisions import DIVISIONS
from features.synth.uscc import (
    ALPHABET,
    GB11714_WEIGHTS,
    USCC_WEIGHTS,
    build_uscc,
    generate_uscc,
    is_valid_uscc,
    organization_check_char,
    uscc_check_char,
)

# Real codes published online (e.g. in python-stdnum's test corpus); they cover
# digit and letter check characters, 'X' and '0' organization check
# characters, legacy digit bodies, post-2015 "MA" bodies and authorities 1 and 9.
PUBLISHED = (
    "91110000600037341L",
    "121200004013590816",
    "91110000710926094P",
    "9115220107837757XE",
    "91310115MA1K3BTP2B",
    "91340600MA2PBM9HXD",
    "9144030071526726XG",
    "91620105L015101280",
    "92340621MA2UK3PJXE",
    "913101145852519045",
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def test_alphabet_is_the_31_gb32100_characters() -> None:
    assert len(ALPHABET) == 31 == len(set(ALPHABET))
    assert not set("IOZSV") & set(ALPHABET)
    assert set("0123456789") <= set(ALPHABET)


def test_weights_are_powers_of_three_mod_31() -> None:
    assert USCC_WEIGHTS == (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    assert GB11714_WEIGHTS == (3, 7, 9, 10, 5, 8, 4, 2)


@pytest.mark.parametrize("code", PUBLISHED)
def test_published_codes_are_valid(code: str) -> None:
    assert is_valid_uscc(code)


def test_check_characters_worked_by_hand() -> None:
    # GB 11714 on 60003734: 6*3 + 3*5 + 7*8 + 3*4 + 4*2 = 109; 109 mod 11 = 10; 11 - 10 = 1
    assert organization_check_char("60003734") == "1"
    # 07837757: sum 276, 276 mod 11 = 1, 11 - 1 = 10 -> 'X'
    assert organization_check_char("07837757") == "X"
    # letters take their full-alphabet value (M = 22, K = 20, ...), not the USCC index
    assert organization_check_char("MA1K3BTP") == "2"
    assert uscc_check_char("91110000600037341") == "L"
    assert uscc_check_char("91310115MA1K3BTP2") == "B"


def test_organization_check_eleven_maps_to_zero() -> None:
    # find a body whose weighted sum is 0 mod 11 -> check value 11 -> '0'
    body = "00000000"
    assert organization_check_char(body) == "0"


def test_known_nonconforming_pilot_code_is_rejected() -> None:
    # issued in a pilot region before the standard; its check character does not conform
    assert not is_valid_uscc("91350100M0001TGQXM")


@pytest.mark.parametrize("code", PUBLISHED[:4])
def test_every_single_character_substitution_is_detected(code: str) -> None:
    for pos in range(18):
        for ch in ALPHABET + "IOZSV":
            if ch == code[pos]:
                continue
            assert not is_valid_uscc(code[:pos] + ch + code[pos + 1 :]), (pos, ch)


@pytest.mark.parametrize("code", PUBLISHED[:4])
def test_adjacent_transpositions_in_first_17_are_detected(code: str) -> None:
    for pos in range(16):
        a, b = code[pos], code[pos + 1]
        if a != b:
            assert not is_valid_uscc(code[:pos] + b + a + code[pos + 2 :]), pos


@pytest.mark.parametrize(
    "bad",
    [
        None,
        91110000600037341,
        "",
        "91110000600037341",  # 17 characters
        "91110000600037341LL",
        "91110000600037341l",  # lower case
        "9111000060003IOZSV",
        "B1110000600037341L",  # undefined registration authority
        "911A0000600037341L",  # division must be digits
    ],
)
def test_malformed_inputs_are_invalid(bad: object) -> None:
    assert not is_valid_uscc(bad)


def test_generate_uscc_distinct_valid_realistic() -> None:
    codes = generate_uscc(20_000, _rng(1))
    assert len(codes) == 20_000 == len(set(codes))
    assert all(is_valid_uscc(code) for code in codes)
    share_91 = np.mean([code.startswith("91") for code in codes])
    assert 0.84 < share_91 < 0.92
    assert {code[:2] for code in codes} > {"91", "92", "93"}
    known = {str(d.code) for d in DIVISIONS}
    assert {code[2:8] for code in codes} <= known
    new_format = np.mean([code[8:10] == "MA" for code in codes])
    assert 0.5 < new_format < 0.7


def test_generate_uscc_is_deterministic_and_seed_dependent() -> None:
    assert generate_uscc(500, _rng(3)) == generate_uscc(500, _rng(3))
    assert generate_uscc(500, _rng(3)) != generate_uscc(500, _rng(4))
    assert generate_uscc(0, _rng(0)) == []


def test_generate_uscc_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n must be"):
        generate_uscc(-1, _rng())
    with pytest.raises(ValueError, match="enterprise_share"):
        generate_uscc(10, _rng(), enterprise_share=1.5)


def test_build_uscc_redraws_duplicate_organization_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from features.synth import uscc

    real = uscc._draw_bodies
    calls: list[int] = []

    def first_draw_collides(codes, rows, new_format, rng):  # type: ignore[no-untyped-def]
        real(codes, rows, new_format, rng)
        if not calls:  # first draw: every body identical -> all but one must be redrawn
            codes[rows, 8:16] = codes[rows[0], 8:16]
        calls.append(len(rows))

    monkeypatch.setattr(uscc, "_draw_bodies", first_draw_collides)
    n = 1000
    codes = build_uscc(np.full(n, "91"), np.full(n, 110105), np.zeros(n, dtype=bool), _rng(5))
    assert calls[:2] == [n, n - 1]
    assert len(set(codes.tolist())) == n
    assert all(is_valid_uscc(str(code)) for code in codes)


def test_build_uscc_validates_inputs() -> None:
    with pytest.raises(ValueError, match="same length"):
        build_uscc(np.full(3, "91"), np.full(2, 110105), np.zeros(3, dtype=bool), _rng())
    with pytest.raises(ValueError, match="six-digit"):
        build_uscc(np.full(1, "91"), np.full(1, 1234), np.zeros(1, dtype=bool), _rng())
    with pytest.raises(ValueError, match="first character"):
        build_uscc(np.full(1, "B1"), np.full(1, 110105), np.zeros(1, dtype=bool), _rng())


def test_generate_a_million_codes_quickly() -> None:
    import time

    start = time.perf_counter()
    codes = generate_uscc(1_000_000, _rng(7))
    elapsed = time.perf_counter() - start
    assert len(codes) == 1_000_000
    assert elapsed < 10.0, f"1M codes took {elapsed:.1f}s"


_BODY = st.text(alphabet="0123456789ABCDEFGHJKLMNPQRTUWXY", min_size=8, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    body=_BODY,
    prefix=st.sampled_from(["91", "92", "93", "12", "52", "Y1"]),
    division=st.sampled_from([d.code for d in DIVISIONS]),
    pos=st.integers(0, 17),
    shift=st.integers(1, 30),
)
def test_constructed_codes_are_valid_and_corruptions_invalid(
    body: str, prefix: str, division: int, pos: int, shift: int
) -> None:
    org = body + organization_check_char(body)
    head = f"{prefix}{division}{org}"
    code = head + uscc_check_char(head)
    assert is_valid_uscc(code)
    corrupted = ALPHABET[(ALPHABET.index(code[pos]) + shift) % 31]
    assert not is_valid_uscc(code[:pos] + corrupted + code[pos + 1 :])
