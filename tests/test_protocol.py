"""Envelopes, stage machines, the Flower codec, party stores and message capture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import RecordDict

from federated.capture import CaptureWriter, read_capture
from federated.codec import decode, encode
from federated.context_store import ContextStore
from federated.party import DictStore
from models.protocol import Envelope, PartyStore, ProtocolError, StageMachine

MACHINE = StageMachine("demo", {"a": {StageMachine.START}, "b": {"a"}, "c": {"a", "b"}})


def _env(stage: str, protocol: str = "demo") -> Envelope:
    return Envelope(protocol, stage, "x", "y")


@pytest.mark.parametrize(
    "path", [["a"], ["a", "b"], ["a", "c"], ["a", "b", "c"]], ids=lambda p: "-".join(p)
)
def test_valid_transitions(path: list[str]) -> None:
    store = DictStore()
    previous = StageMachine.START
    for stage in path:
        assert MACHINE.advance(store, _env(stage)) == previous
        previous = stage
    assert MACHINE.current(store) == path[-1]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (["b"], "not allowed after 'idle'"),
        (["a", "a"], "not allowed after 'a'"),
        (["a", "c", "b"], "not allowed after 'c'"),
        (["z"], "unknown stage 'z'"),
    ],
)
def test_invalid_transitions(path: list[str], message: str) -> None:
    store = DictStore()
    for stage in path[:-1]:
        MACHINE.advance(store, _env(stage))
    with pytest.raises(ProtocolError, match=message):
        MACHINE.advance(store, _env(path[-1]))


def test_invalid_transition_does_not_change_stage() -> None:
    store = DictStore()
    MACHINE.advance(store, _env("a"))
    with pytest.raises(ProtocolError):
        MACHINE.advance(store, _env("a"))
    assert MACHINE.current(store) == "a"


def test_wrong_protocol_is_refused() -> None:
    with pytest.raises(ProtocolError, match="routed to 'demo'"):
        MACHINE.advance(DictStore(), _env("a", protocol="other"))


def test_envelope_accessors() -> None:
    env = Envelope("p", "s", "a", "b", {"n": 3, "t": "x", "arr": np.arange(3), "j": '{"k": 1}'})
    assert env.integer("n") == 3
    assert env.text("t") == "x"
    assert env.json("j") == {"k": 1}
    assert env.array("arr").tolist() == [0, 1, 2]
    with pytest.raises(ProtocolError, match="'missing' is missing"):
        env.text("missing")
    with pytest.raises(ProtocolError, match="must be an array"):
        env.array("t")
    with pytest.raises(ProtocolError, match="must be text"):
        env.text("n")
    with pytest.raises(ProtocolError, match="lacks"):
        env.require("n", "zz")
    assert env.reply("r").recipient == "a"
    assert env.reply("r").sender == "b"
    assert env.nbytes() > 24


def test_codec_round_trip() -> None:
    payloads: list[dict[str, Any]] = [
        {
            "i": 2**62,
            "f": 0.25,
            "s": "text",
            "b": b"\x00\xff",
            "t": True,
            "li": [1, 2],
            "lb": [b"a", b"bc"],
            "u8": np.arange(5, dtype=np.uint8),
            "f64": np.linspace(0, 1, 7).reshape(7, 1),
            "str": np.array(["91A", "91BB"]),
            "empty": np.array([], dtype=np.int64),
        },
        {},
    ]
    envs = [Envelope("p", f"s{i}", "a", "b", p) for i, p in enumerate(payloads)]
    back = decode(encode(envs))
    assert [(e.protocol, e.stage, e.sender, e.recipient) for e in back] == [
        (e.protocol, e.stage, e.sender, e.recipient) for e in envs
    ]
    for original, decoded in zip(envs, back, strict=True):
        assert set(original.payload) == set(decoded.payload)
        for key, value in original.payload.items():
            got = decoded.payload[key]
            if isinstance(value, np.ndarray):
                assert isinstance(got, np.ndarray)
                assert got.dtype == value.dtype
                assert np.array_equal(got, value)
            else:
                assert got == value


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"big": 2**64}, "beyond 64 bits"),
        ({"obj": np.array([object()], dtype=object)}, "object array"),
        ({"e": []}, "empty list"),
        ({"d": {"nested": 1}}, "unsupported type"),
    ],
)
def test_codec_refuses_unsafe_payloads(payload: dict[str, Any], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        encode([Envelope("p", "s", "a", "b", payload)])


def test_decode_rejects_foreign_messages() -> None:
    with pytest.raises(ProtocolError, match="no lab envelopes"):
        decode(RecordDict())


@pytest.mark.parametrize(
    "make", [DictStore, lambda: ContextStore(RecordDict())], ids=["dict", "context"]
)
def test_stores_behave_alike(make: Any) -> None:
    store: PartyStore = make()
    store.put_array("a", np.arange(4))
    store.put_json("d", {"k": [1, 2]})
    assert store.get_array("a").tolist() == [0, 1, 2, 3]
    assert store.get_json("d") == {"k": [1, 2]}
    assert store.get_json("missing", "dflt") == "dflt"
    store.delete("a")
    store.delete("d")
    with pytest.raises(KeyError):
        store.get_array("a")
    assert store.get_json("d") is None


def test_context_store_survives_in_the_flower_state() -> None:
    state = RecordDict()
    ContextStore(state).put_json("job.stage", "hello")
    assert ContextStore(state).get_json("job.stage") == "hello"


def test_capture_round_trip(tmp_path: Path) -> None:
    writer = CaptureWriter(tmp_path / "c.jsonl")
    env = Envelope("p", "s", "a", "b", {"x": np.arange(3), "b": b"\x01", "n": 1, "lb": [b"z"]})
    writer("to_party", env)
    writer.close()
    [(direction, back)] = read_capture(tmp_path / "c.jsonl")
    assert direction == "to_party"
    x = back.payload["x"]
    assert isinstance(x, np.ndarray)
    assert x.tolist() == [0, 1, 2]
    assert back.payload["b"] == b"\x01"
    assert back.payload["n"] == 1
    assert back.payload["lb"] == [b"z"]
