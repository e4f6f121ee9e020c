"""The party side of a vertical protocol: one bank, one or more platforms.

:class:`VerticalParty` routes each envelope to the party's role after checking it against that
role's stage machine, so no step runs on a message its stage does not allow. The bank drives
both vertical protocols by waiting, stage after stage, until every platform has answered
(:func:`check_platform_reply`, :func:`record_answer`). Each party keeps a phase clock
(:class:`PartyClock`) in its own store between messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from models.protocol import (
    Envelope,
    PartyContext,
    PhaseClock,
    ProtocolError,
    RoleDispatch,
    RoleHandler,
    StageMachine,
)


class StagedRole:
    """A role's handler behind its stage machine: the stage is checked before any work runs."""

    def __init__(self, stages: StageMachine, handler: RoleHandler) -> None:
        self._stages = stages
        self._handler = handler

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Advance the role's stage (or raise :class:`ProtocolError`), then run the step."""
        self._stages.advance(ctx.store, envelope)
        return self._handler.handle(envelope, ctx)


class VerticalParty(RoleDispatch):
    """Party side of a bank/platform protocol; dispatches on the party's role.

    Parameters
    ----------
    bank_stages, platform_stages : StageMachine
        Each role's allowed stage transitions.
    bank, platform : RoleHandler
        Each role's steps.
    """

    def __init__(
        self,
        bank_stages: StageMachine,
        bank: RoleHandler,
        platform_stages: StageMachine,
        platform: RoleHandler,
    ) -> None:
        super().__init__(StagedRole(bank_stages, bank), StagedRole(platform_stages, platform))


@dataclass(frozen=True)
class PartyClock:
    """Where a protocol keeps a party's :class:`~models.protocol.PhaseClock` between messages."""

    key: str

    def load(self, ctx: PartyContext) -> PhaseClock:
        """The party's clock so far (empty before the first phase)."""
        return PhaseClock.load(ctx.store, self.key)

    def save(self, ctx: PartyContext, clock: PhaseClock) -> None:
        """Keep the party's clock until its next message."""
        clock.save(ctx.store, self.key)


def check_platform_reply(protocol: str, env: Envelope, state: Mapping[str, Any]) -> None:
    """Refuse a reply the bank is not waiting for.

    ``state`` is the bank's protocol state: ``platforms`` (the job's platforms), ``expect``
    (the stage, or list of stages, it waits for) and ``pending`` (platforms yet to answer).

    Raises
    ------
    ProtocolError
        If the sender is not one of the job's platforms, the stage is not awaited, or the
        sender already answered it.
    """
    if env.sender not in state["platforms"]:
        raise ProtocolError(f"{protocol}/{env.stage} from '{env.sender}', not a platform here")
    expect = state["expect"]
    awaited = expect if isinstance(expect, list) else [expect]
    if env.stage not in awaited:
        raise ProtocolError(
            f"{protocol}/{env.stage} from '{env.sender}' while waiting for {expect}"
        )
    if env.sender not in state["pending"]:
        raise ProtocolError(f"{protocol}/{env.stage} from '{env.sender}' arrived twice")


def record_answer(state: dict[str, Any], sender: str) -> bool:
    """Record ``sender``'s answer in the bank's ``state``; ``True`` once every platform answered."""
    state["pending"] = [p for p in state["pending"] if p != sender]
    return not state["pending"]
