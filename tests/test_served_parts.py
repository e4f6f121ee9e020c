"""A saved platform part is served through its model type: the scorer knows no type."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from features.binning import BinSpec
from models.model_type import model_types
from models.secureboost.parts import PlatformPart, RuleSplit
from models.secureboost.serving import ServedSplits
from models.serving import PartKindError, Selection, SelectionError, load_part
from models.vertical_lr.parts import PlatformLRPart
from models.vertical_lr.serving import ServedBins
from tests.conftest import REPO

FRAME = pd.DataFrame({"vat": [10.0, 100.0, np.nan, 300.0], "grade": ["A", "M", "B", None]})


def _splits() -> PlatformPart:
    return PlatformPart(
        party="platform",
        model_id="sb-x-platform",
        splits={
            "t0n0": RuleSplit("vat", (0,), missing_left=True),
            "t1n3": RuleSplit("grade", (0, 2), missing_left=False),
        },
        bins={
            "vat": BinSpec("vat", "numeric", (50.0,)),
            "grade": BinSpec("grade", "categorical", categories=("A", "B", "M")),
        },
        bank="bank",
    )


def _bins() -> PlatformLRPart:
    return PlatformLRPart(
        party="platform",
        model_id="lr-x-platform",
        specs=(BinSpec("vat", "numeric", (50.0, 200.0)),),
        mappings=((0, 0, 1, 1),),
        bank="bank",
    )


def test_each_saved_kind_loads_through_its_model_type() -> None:
    served = load_part(json.loads(json.dumps(_splits().to_dict())))
    assert isinstance(served, ServedSplits)
    assert served.content_hash == _splits().content_hash
    assert served.bank == "bank"
    lr = load_part(json.loads(json.dumps(_bins().to_dict())))
    assert isinstance(lr, ServedBins)
    assert lr.columns() == ["vat"]
    kinds = {t.part_kind for t in model_types("vertical") if t.serving}
    assert kinds >= {"secureboost-platform-part", "hetero_lr.platform"}


def test_an_unknown_kind_is_refused_with_the_kinds_that_are_served() -> None:
    with pytest.raises(PartKindError, match=r"'split-nn\.platform'.*secureboost-platform-part"):
        load_part({"kind": "split-nn.platform", "model_id": "m"})


def test_split_answers_are_the_rules_and_selections_are_checked() -> None:
    served = ServedSplits(_splits())
    everything = served.answer(FRAME, Selection())
    assert everything.split_ids == ("t0n0", "t1n3")
    assert everything.to_json()["bits"] == ["11", "01", "10", "00"]
    one_tree = served.answer(FRAME, Selection(trees=(1,)))
    assert one_tree.split_ids == ("t1n3",)
    assert one_tree.n_items == 1
    assert served.n_items(Selection(split_ids=("t0n0", "nope"))) == 2  # charged as asked
    with pytest.raises(SelectionError, match=r"no platform splits \['nope'\]"):
        served.check(Selection(split_ids=("t0n0", "nope")))
    served.check(Selection(trees=(7,)))  # a tree without platform splits adds nothing


def test_coarse_bins_take_no_selection() -> None:
    served = ServedBins(_bins())
    answer = served.answer(FRAME, Selection())
    assert answer.to_json() == {"features": ["vat"], "bins": [[0], [0], [1], [1]]}
    assert served.n_items(Selection(split_ids=("t0n0",))) == 1
    with pytest.raises(SelectionError, match="send no split_ids or trees"):
        served.check(Selection(split_ids=("t0n0",)))


def test_serving_names_no_model_type() -> None:
    """lab/serving imports no model type's package and tests no part kind."""
    offenders = [
        f"{path.relative_to(REPO)}: {line.strip()}"
        for path in (REPO / "lab" / "serving").glob("*.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if re.search(r"^\s*(from|import) models\.(secureboost|vertical_lr)|[\"']hetero_lr\.", line)
    ]
    assert offenders == []
