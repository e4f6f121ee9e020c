"""Promoting registered model versions with MLflow aliases, recorded in the audit log.

A job registers each new version under ``challenger`` (see :mod:`lab.registry`); the bank serves
``models:/NAME@champion``. Promotion points an alias at a version, either by number or by
following another alias (``challenger`` -> ``champion``). Moving an alias is atomic in MLflow, and
a serving process resolves the alias when it loads the model, so a restart picks up the new
champion. A version that becomes champion is no longer the challenger: promotion removes the
``challenger`` alias from it (after ``champion`` is set, so the version is never unnamed), and
the next job registers a new challenger.

Every promotion is an audit entry ``model_promoted`` (model, version, alias, the version it
replaced, the aliases it removed) in the bank's audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab.governance import events
from lab.governance.audit import AuditLog
from lab.serving.errors import PromotionError

#: The aliases the lab manages.
ALIASES: tuple[str, ...] = ("challenger", "champion")

#: Each alias, and the aliases a version loses when it gets it (a champion is no challenger).
SUPERSEDES: dict[str, tuple[str, ...]] = {"champion": ("challenger",), "challenger": ()}


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did."""

    name: str
    alias: str
    version: str
    previous_version: str | None
    from_alias: str | None
    #: Aliases removed from the promoted version (:data:`SUPERSEDES`).
    removed_aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "previous_version": self.previous_version,
            "from_alias": self.from_alias,
            "removed_aliases": list(self.removed_aliases),
        }


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _alias_version(client: Any, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _check_alias(alias: str, what: str) -> None:
    if alias not in ALIASES:
        raise PromotionError(
            f"{what} {alias!r} is not a lab alias; use one of {', '.join(ALIASES)}"
        )


def promote(
    uri: str,
    name: str,
    alias: str,
    *,
    version: str | None = None,
    from_alias: str | None = None,
    audit: AuditLog | None = None,
    actor: str | None = None,
) -> Promotion:
    """Point ``alias`` of model ``name`` at ``version`` or at the version ``from_alias`` names.

    Raises
    ------
    PromotionError
        Unknown model, version or alias, or both/neither of ``version`` and ``from_alias``.
    """
    from mlflow.exceptions import MlflowException

    _check_alias(alias, "alias")
    if (version is None) == (from_alias is None):
        raise PromotionError("name exactly one of --version V or --from ALIAS")
    client = _client(uri)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models())
        raise PromotionError(
            f"no registered model {name!r} in {uri}; known models: {known or 'none'}"
        ) from exc
    if from_alias is not None:
        _check_alias(from_alias, "source alias")
        if from_alias == alias:
            raise PromotionError(f"--from and --to are both {alias!r}; promote to the other alias")
        target = _alias_version(client, name, from_alias)
        if target is None:
            raise PromotionError(
                f"model {name!r} has no version aliased {from_alias!r}; train one or promote "
                "a version by number"
            )
    else:
        target = str(version)
        try:
            client.get_model_version(name, target)
        except MlflowException as exc:
            versions = sorted(
                (str(v.version) for v in client.search_model_versions(f"name = '{name}'")),
                key=int,
            )
            raise PromotionError(
                f"model {name!r} has no version {target!r}; versions: {versions}"
            ) from exc
    previous = _alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, target)
    removed = tuple(a for a in SUPERSEDES[alias] if _alias_version(client, name, a) == target)
    for stale in removed:
        client.delete_registered_model_alias(name, stale)
    log = audit if audit is not None else AuditLog()
    events.model_promoted(
        log,
        registry=uri,
        model_name=name,
        version=target,
        alias=alias,
        previous_version=previous,
        from_alias=from_alias,
        removed_aliases=removed,
        actor=actor,
    )
    return Promotion(name, alias, target, previous, from_alias, removed)


def list_models(uri: str) -> list[dict[str, Any]]:
    """Every version of every registered model: name, version, aliases, run, creation time."""
    client = _client(uri)
    rows: list[dict[str, Any]] = []
    for model in sorted(client.search_registered_models(), key=lambda m: m.name):
        aliases: dict[str, list[str]] = {}
        for alias, number in (model.aliases or {}).items():
            aliases.setdefault(str(number), []).append(alias)
        for v in sorted(
            client.search_model_versions(f"name = '{model.name}'"), key=lambda v: int(v.version)
        ):
            rows.append(
                {
                    "name": model.name,
                    "version": str(v.version),
                    "aliases": sorted(aliases.get(str(v.version), [])),
                    "run_id": v.run_id,
                    "created_ms": int(v.creation_timestamp or 0),
                    "platform_parts": (v.tags or {}).get("lab.platform_parts"),
                }
            )
    return rows
