"""Both vertical estimators follow the scikit-learn contract the same way."""

from __future__ import annotations

import inspect
from dataclasses import fields
from typing import Any

import pandas as pd
import pytest
from sklearn.base import clone

from federated.estimators import HeteroLRClassifier, SecureBoostClassifier
from models.secureboost.params import SecureBoostParams
from models.vertical_lr.params import HeteroLRParams

CASES = [(SecureBoostClassifier, SecureBoostParams), (HeteroLRClassifier, HeteroLRParams)]


@pytest.mark.parametrize(("estimator", "params"), CASES)
def test_the_keyword_arguments_are_the_params_fields_with_their_defaults(
    estimator: Any, params: Any
) -> None:
    names = [f.name for f in fields(params)]
    assert list(inspect.signature(estimator).parameters) == names
    got = estimator().get_params()
    assert list(got) == names
    # ``groups`` is None for "the dataclass's default" (a dict default would be shared).
    values = {k: v for k, v in got.items() if not (k == "groups" and v is None)}
    assert params(**values) == params()


@pytest.mark.parametrize(("estimator", "params"), CASES)
def test_init_only_stores_and_clone_round_trips(estimator: Any, params: Any) -> None:
    del params
    odd = estimator(max_bin=-3, key_bits=7)  # nonsense, but __init__ does not validate
    assert odd.get_params()["max_bin"] == -3
    est = estimator().set_params(max_bin=7, insecure_test_keys=True)
    copy = clone(est)
    assert copy is not est
    assert copy.get_params() == est.get_params()


@pytest.mark.parametrize(("estimator", "params"), CASES)
def test_set_params_refuses_unknown_names_and_sets_nothing(estimator: Any, params: Any) -> None:
    del params
    est = estimator()
    with pytest.raises(ValueError, match=r"unknown parameters \['nope'\]"):
        est.set_params(max_bin=5, nope=1)
    assert est.get_params()["max_bin"] != 5


@pytest.mark.parametrize(("estimator", "params"), CASES)
def test_fit_validates_its_inputs_before_any_key_is_made(estimator: Any, params: Any) -> None:
    del params
    bank = pd.DataFrame({"a": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="one label per row"):
        estimator(key_bits=512, insecure_test_keys=True).fit(
            bank, [0, 1], {"platform": pd.DataFrame({"b": [1.0, 2.0, 3.0]})}
        )
