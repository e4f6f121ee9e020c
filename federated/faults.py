"""Fault drills: make one node fail chosen messages, as a crashed or unplugged node would.

A node's config may carry ``fault``: a comma-separated list of ``STAGE`` or ``STAGE@ROUND``
items, e.g. ``train@2`` (the Flower ``train`` message of round 2) or ``secagg/unmask`` (every
unmask request). Stages are Flower message types (``train``, ``evaluate``) or lab envelope
stages (``protocol/stage``). A matching message makes the ClientApp raise
:class:`InjectedFaultError`, so the coordinator sees exactly what a failing node produces: an error
reply (or, on the deployment engine, a node that went away).

Drills exist to test dropout tolerance (secure aggregation) and failure handling end to end;
they are off unless a node's config names them.
"""

from __future__ import annotations

from dataclasses import dataclass

from federated.spec import SpecError


class InjectedFaultError(RuntimeError):
    """Raised by a node on a message its fault drill names."""


@dataclass(frozen=True)
class FaultDrill:
    """Parsed ``fault`` setting: (stage, round or None for every round) pairs."""

    items: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FaultDrill:
        """Parse a node config's ``fault`` value.

        Raises
        ------
        SpecError
            On an item that is not ``STAGE`` or ``STAGE@ROUND`` with ROUND a positive integer.
        """
        if not text:
            return cls()
        items = []
        for raw in str(text).split(","):
            item = raw.strip()
            if not item:
                continue
            stage, sep, when = item.partition("@")
            if not stage or (sep and not when.isdigit()) or (sep and int(when) < 1):
                raise SpecError(
                    f"fault drill item '{item}' is not STAGE or STAGE@ROUND (e.g. 'train@2')"
                )
            items.append((stage, int(when) if sep else None))
        return cls(tuple(items))

    def check(self, stage: str, server_round: int | None) -> None:
        """Raise :class:`InjectedFaultError` if this message is one the drill names."""
        for name, when in self.items:
            if name == stage and (when is None or when == server_round):
                where = f" of round {server_round}" if server_round is not None else ""
                raise InjectedFaultError(f"fault drill: this node fails '{stage}'{where}")
