"""The platform's half of scoring: split decisions for authorized enterprises, nothing else.

:class:`PlatformScorer` is what the scoring endpoint (:mod:`lab.serving.platform_endpoint`)
runs for each call, with no HTTP in it. It holds, all in the platform's domain:

- the platform's model parts (``<dir>/models/<model_id>.json``, written by training), served
  through their model type (:mod:`models.serving`: what each part answers is its type's own);
- the platform's feature table, read from the file published as a feature set in the catalog
  (its content must still be what was published);
- the governance home: the authorization registry and the audit log.

A call names a model, a purpose, enterprise ids and optionally the splits (or trees) wanted.
Authorization comes before any other answer about the model or the enterprises. It is refused,
in this order, if the bank's credential does not allow the purpose (403); the model is unknown,
or was trained with another bank (404 ``unknown_model`` either way: a bank cannot probe other
banks' model ids; :meth:`PlatformScorer.admit`); the published columns do not allow the purpose
(403); any enterprise lacks a valid authorization of this bank for this purpose covering every
feature group the part reads (403, listing them); the bank pins another content hash (409); a
split or tree is not in the part (422); or an authorized enterprise has no row at the platform
(404, listing them). A refusal is all or nothing: no bit is returned for any enterprise of a
refused call, and no enterprise ever gets a default answer.

Binding: a part records the bank that trained it (``bank``, set by the platform's side of the
training protocol from the job's label holder); parts written before binding existed are served
to nobody until the platform binds them (``lab platform bind``, a ``<model_id>.bank`` file beside
the part, audited).

What the bank learns from an answered call
------------------------------------------
What the part's type answers, for enterprises that authorized it and nothing else: for a
SecureBoost part one left/right bit per requested platform split
(:mod:`models.secureboost.serving`), for a hetero LR part each column's anonymous coarse bin
(:mod:`models.vertical_lr.serving`). Never a feature value, a threshold or a bin edge.

Authorization is checked before existence on purpose: an enterprise that has not authorized the
bank gets the same refusal whether or not the platform holds its row, so the endpoint does not
tell banks which enterprises the platform knows.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import DataError
from features.ids import normalise
from features.io import PartyTable, read_party_table
from lab.governance.audit import AuditLog
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.catalog import Catalog, ServedSet
from lab.governance.errors import GovernanceError, PurposeNotAllowedError
from lab.governance.vocabulary import PURPOSES, parse_ref
from lab.serving.errors import (
    ForeignModelError,
    ModelHashMismatchError,
    NotAuthorizedError,
    PurposeRefusedError,
    RequestFormatError,
    ServingSetupError,
    UnknownEnterpriseError,
    UnknownModelError,
    UnknownSplitError,
)
from lab.serving.tokens import BankCredential
from models.serving import (
    PartAnswer,
    PartKindError,
    Selection,
    SelectionError,
    ServedPart,
    load_part,
)
from models.vertical.parts import (
    BINDING_SUFFIX,
    MODEL_ID_PATTERN,
    ModelIdError,
    bound_bank,
    model_file,
)

logger = logging.getLogger(__name__)

#: Most enterprises one call may name (a bank scores applications, not the platform's table).
MAX_ENTERPRISES_PER_CALL = 1000


@dataclass(frozen=True)
class ScoringRequest:
    """One validated call: which model, for what, which enterprises, which splits."""

    model_id: str
    purpose: str
    enterprise_ids: tuple[str, ...]
    split_ids: tuple[str, ...] | None = None
    trees: tuple[int, ...] | None = None
    content_hash: str | None = None

    @property
    def selection(self) -> Selection:
        """What the call asks of the part beyond its enterprises."""
        return Selection(split_ids=self.split_ids, trees=self.trees)

    @classmethod
    def from_json(cls, body: Any) -> ScoringRequest:
        """Validate a decoded JSON body.

        Raises
        ------
        RequestFormatError
            Naming the field at fault and what it must be.
        """
        if not isinstance(body, dict):
            raise RequestFormatError("the body must be a JSON object; see docs/serving.md")
        allowed = {"model_id", "purpose", "enterprise_ids", "split_ids", "trees", "content_hash"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise RequestFormatError(f"unknown fields {unknown}; allowed: {sorted(allowed)}")
        model_id = body.get("model_id")
        if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id):
            raise RequestFormatError(
                f"model_id {model_id!r} must be the platform part's id, e.g. 'sb-...-platform'"
            )
        purpose = body.get("purpose")
        if purpose not in PURPOSES:
            raise RequestFormatError(f"purpose {purpose!r} must be one of {', '.join(PURPOSES)}")
        ids = body.get("enterprise_ids")
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, str) and i.strip() for i in ids)
        ):
            raise RequestFormatError("enterprise_ids must be a non-empty list of non-empty strings")
        if len(ids) > MAX_ENTERPRISES_PER_CALL:
            raise RequestFormatError(
                f"{len(ids)} enterprise_ids in one call; send at most {MAX_ENTERPRISES_PER_CALL}"
            )
        split_ids = body.get("split_ids")
        if split_ids is not None and (
            not isinstance(split_ids, list) or not all(isinstance(s, str) for s in split_ids)
        ):
            raise RequestFormatError("split_ids must be a list of strings, e.g. ['t0n0']")
        trees = body.get("trees")
        if trees is not None and (
            not isinstance(trees, list)
            or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in trees)
        ):
            raise RequestFormatError("trees must be a list of tree indices (integers >= 0)")
        content_hash = body.get("content_hash")
        if content_hash is not None and not isinstance(content_hash, str):
            raise RequestFormatError("content_hash must be a string 'sha256:<hex>'")
        return cls(
            model_id=model_id,
            purpose=str(purpose),
            enterprise_ids=tuple(i.strip() for i in ids),
            split_ids=None if split_ids is None else tuple(split_ids),
            trees=None if trees is None else tuple(trees),
            content_hash=content_hash,
        )


@dataclass(frozen=True)
class Admission:
    """A call admitted past the purpose and model checks, with what it will cost.

    Attributes
    ----------
    part : ServedPart
        The part, bound to the calling bank.
    cost : int
        ``enterprises x values per enterprise`` (at least 1): what the rate limiter charges.
    """

    part: ServedPart
    cost: int


@dataclass(frozen=True)
class Answer:
    """The answer to one call: the part's answer for the enterprises, in request order."""

    model_id: str
    content_hash: str
    body: PartAnswer

    @property
    def n_items(self) -> int:
        """Values revealed per enterprise (audited)."""
        return self.body.n_items

    def to_json(self, purpose: str) -> dict[str, Any]:
        """The response body: the part's fields after the model, its hash and the purpose."""
        return {
            "model_id": self.model_id,
            "content_hash": self.content_hash,
            "purpose": purpose,
            **self.body.to_json(),
        }


class PlatformScorer:
    """Answers scoring calls from the platform's own parts, data and governance records.

    Parameters
    ----------
    platform_dir : Path
        The platform's store (model parts in ``models/``), e.g. ``$LAB_HOME/parties/platform``.
    data : Path
        The platform's feature table, as published under ``feature_set``.
    feature_set : str
        ``name@version`` in the catalog of ``governance_home``: gives the id column, the id
        scheme and each column's group, sensitivity and allowed purposes.
    governance_home : Path
        Folder of ``catalog/``, ``governance.db`` (authorizations) and ``audit/``.
    today : callable, optional
        The day authorizations must be valid on (default: today, UTC).

    Raises
    ------
    ServingSetupError
        If the store, the data or the feature set is missing, or the data is not what was
        published.
    """

    def __init__(
        self,
        platform_dir: Path,
        data: Path,
        feature_set: str,
        governance_home: Path,
        *,
        today: Any = None,
    ) -> None:
        self.platform_dir = platform_dir
        self.models_dir = platform_dir / "models"
        self.governance_home = governance_home
        self.audit = AuditLog(governance_home / "audit" / "log.jsonl")
        self._today = today or (lambda: datetime.now(UTC).date())
        self._catalog = Catalog(governance_home / "catalog", audit=self.audit)
        self.feature_set = feature_set
        self.data = data
        try:
            parse_ref(feature_set)
            served = self._catalog.check_served(feature_set, data)
        except GovernanceError as exc:
            raise ServingSetupError(f"cannot serve {data}: {exc}") from exc
        self._spec = served.entry.spec
        self._parts: dict[str, ServedPart] = {}
        self._served: dict[tuple[str, str], ServedSet] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        if not self.models_dir.is_dir():
            raise ServingSetupError(
                f"{self.models_dir}: no model store; train a vertical model first (the platform "
                "part is written there) or pass the platform's store with --dir"
            )
        self.table = self._read_table(served)
        self._row_of = {str(eid): i for i, eid in enumerate(self.table.ids.tolist())}

    # -- setup ----------------------------------------------------------------------------------

    def _read_table(self, served: ServedSet) -> PartyTable:
        spec = served.entry.spec
        categorical = [n for n, c in spec.columns.items() if c.type == "categorical"]
        try:
            table = read_party_table(
                self.data,
                id_column=spec.id_column,
                categorical=categorical,
                id_scheme=spec.id_scheme,
            )
        except DataError as exc:
            raise ServingSetupError(f"cannot serve {self.data}: {exc}") from exc
        if table.digest != served.entry.data_digest:
            raise ServingSetupError(
                f"{self.data} changed while being read ({table.digest}); restart the endpoint"
            )
        logger.info("platform table %s: %d enterprises", self.data, table.n_rows)
        return table

    def part(self, model_id: str) -> ServedPart:
        """The platform part ``model_id`` (loaded once, served through its model type).

        Raises
        ------
        UnknownModelError
            If the platform's store holds no such part.
        """
        with self._lock:
            cached = self._parts.get(model_id)
            if cached is not None:
                return cached
            try:
                path = model_file(self.models_dir, model_id)
            except ModelIdError:
                path = None
            if path is None or not path.is_file():
                raise UnknownModelError(_unknown_model(model_id))
            raw = json.loads(path.read_text(encoding="utf-8"))
            try:
                part = load_part(raw)
            except PartKindError as exc:
                raise ServingSetupError(f"{path}: {exc}") from exc
            missing = sorted(set(part.columns()) - set(self.table.features))
            if missing:
                raise ServingSetupError(
                    f"model {model_id!r} reads columns {missing} that {self.data} lacks; serve "
                    "the table the model was trained on"
                )
            self._parts[model_id] = part
            return part

    def bank_of(self, part: ServedPart) -> str | None:
        """The bank a part serves: its own ``bank``, else its binding file, else ``None``."""
        return bound_bank(self.models_dir, part.model_id, part.bank)

    def admit(self, bank: BankCredential, request: ScoringRequest) -> Admission:
        """Check the purpose of the credential and that the model is the bank's; price the call.

        Raises
        ------
        PurposeRefusedError
            If the bank's token does not allow the purpose.
        UnknownModelError
            If there is no such part, or it is another bank's (or nobody's): the same answer.
        """
        if request.purpose not in bank.purposes:
            raise PurposeRefusedError(
                f"bank {bank.bank!r} may score for {sorted(bank.purposes)}, not "
                f"{request.purpose!r}; ask the platform to issue a token for that purpose"
            )
        part = self.part(request.model_id)
        owner = self.bank_of(part)
        if owner != bank.bank:
            if owner is None:
                logger.warning(
                    "model part %s is bound to no bank; bind it with `lab platform bind %s "
                    "--bank NAME` to serve it",
                    part.model_id,
                    part.model_id,
                )
            raise ForeignModelError(
                _unknown_model(request.model_id),
                outcome="unbound_model" if owner is None else "foreign_model",
            )
        n_items = part.n_items(request.selection)
        return Admission(part, len(request.enterprise_ids) * max(1, n_items))

    def models(self) -> list[str]:
        """Ids of the parts in the platform's store."""
        return sorted(p.stem for p in self.models_dir.glob("*.json"))

    # -- one call ---------------------------------------------------------------------------------

    def decide(
        self,
        bank: BankCredential,
        request: ScoringRequest,
        admission: Admission | None = None,
    ) -> Answer:
        """Check ``request`` for ``bank`` and return what the part computes, or raise a refusal.

        What a part answers is its model type's (:mod:`models.serving`); a selection it does
        not hold is refused before any row is read. ``admission`` is :meth:`admit`'s (computed
        if absent).

        Raises
        ------
        PurposeRefusedError, UnknownModelError, NotAuthorizedError, ModelHashMismatchError,
        UnknownSplitError, UnknownEnterpriseError
            See the module docstring for the order.
        """
        part = (admission or self.admit(bank, request)).part
        served = self._served_for(part, request.purpose)
        refused = self._unauthorized(bank.bank, request, served)
        if refused:
            raise NotAuthorizedError(
                f"{len(refused)} enterprise(s) have no valid authorization of bank "
                f"{bank.bank!r} for {request.purpose!r} covering groups "
                f"{sorted(served.groups)}: {_preview(refused)}; nothing was scored",
                enterprise_ids=refused,
            )
        if request.content_hash is not None and request.content_hash != part.content_hash:
            raise ModelHashMismatchError(
                f"model {part.model_id!r} is {part.content_hash} at the platform but the bank "
                f"pins {request.content_hash}; re-register the bank's model from the same job"
            )
        selection = request.selection
        try:
            part.check(selection)
        except SelectionError as exc:
            raise UnknownSplitError(str(exc)) from exc
        keys = self._keys(request.enterprise_ids)
        unknown = [
            eid
            for eid, key in zip(request.enterprise_ids, keys, strict=True)
            if key not in self._row_of
        ]
        if unknown:
            raise UnknownEnterpriseError(
                f"{len(unknown)} authorized enterprise(s) are not in the platform's data "
                f"({self.feature_set}): {_preview(unknown)}; check the ids (no default is "
                "scored for an unknown enterprise)",
                enterprise_ids=unknown,
            )
        rows = np.fromiter((self._row_of[k] for k in keys), dtype=np.int64, count=len(keys))
        frame = self.table.features.iloc[rows].reset_index(drop=True)
        return Answer(part.model_id, part.content_hash, part.answer(frame, selection))

    def _served_for(self, part: ServedPart, purpose: str) -> ServedSet:
        key = (part.model_id, purpose)
        with self._lock:
            served = self._served.get(key)
        if served is not None:
            return served
        columns = sorted(set(part.columns()))
        try:
            served = self._catalog.check_served(
                self.feature_set, self.data, columns, purpose=purpose
            )
        except PurposeNotAllowedError as exc:
            raise PurposeRefusedError(str(exc)) from exc
        except GovernanceError as exc:
            raise ServingSetupError(str(exc)) from exc
        with self._lock:
            self._served[key] = served
        return served

    def _registry(self) -> AuthorizationRegistry:
        # sqlite connections stay in the thread that opened them.
        registry: AuthorizationRegistry | None = getattr(self._local, "registry", None)
        if registry is None:
            registry = AuthorizationRegistry(
                self.governance_home / "governance.db", audit=self.audit
            )
            self._local.registry = registry
        return registry

    def _unauthorized(self, bank: str, request: ScoringRequest, served: ServedSet) -> list[str]:
        day: date = self._today()
        keys = self._keys(request.enterprise_ids)
        found = self._registry().records_of(bank, request.purpose, [*request.enterprise_ids, *keys])
        refused: list[str] = []
        for eid, key in zip(request.enterprise_ids, keys, strict=True):
            candidates = found.get(eid.strip(), []) + (found.get(key, []) if key != eid else [])
            if not any(
                a.valid_for(
                    bank, request.purpose, day, served.groups, served.needs_personal_consent
                )
                for a in candidates
            ):
                refused.append(eid)
        return refused

    def _keys(self, ids: Sequence[str]) -> list[str]:
        """Ids normalised with the feature set's id scheme (as the table's ids are)."""
        series = normalise(pd.Series(list(ids), dtype="string").str.strip(), self._spec.id_scheme)
        return [str(v) for v in series.tolist()]


def _unknown_model(model_id: str) -> str:
    return (
        f"the platform holds no model part {model_id!r} for this bank; check the bank part's "
        "platform reference (lab.platform_parts tag of the model version)"
    )


def bind_part(models_dir: Path, model_id: str, bank: str) -> Path:
    """Bind a part written before parts named their bank to ``bank`` (``<id>.bank`` file).

    Raises
    ------
    ServingSetupError
        If there is no such part, or it is already bound (a binding is never changed).
    """
    from lab.governance.vocabulary import check_name

    check_name(bank, "bank name")
    try:
        path = model_file(models_dir, model_id)
    except ModelIdError as exc:
        raise ServingSetupError(str(exc)) from exc
    if not path.is_file():
        raise ServingSetupError(f"{path}: no such model part; list them in {models_dir}")
    raw = json.loads(path.read_text(encoding="utf-8"))
    if raw.get("bank") is not None:
        raise ServingSetupError(
            f"model part {model_id!r} is already bound to bank {raw['bank']!r} (by training)"
        )
    binding = models_dir / f"{model_id}{BINDING_SUFFIX}"
    try:
        with binding.open("x", encoding="utf-8") as fh:
            fh.write(bank + "\n")
    except FileExistsError as exc:
        bound = binding.read_text(encoding="utf-8").strip()
        raise ServingSetupError(
            f"model part {model_id!r} is already bound to bank {bound!r}; bindings never change"
        ) from exc
    return binding


def _preview(ids: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")
