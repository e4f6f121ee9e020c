"""The embedded runtime's faster message dispatch replaces one Flower function: pin what it is."""

from __future__ import annotations

import ast
import inspect
import textwrap

from federated import simulation


def _loop_shape(source: str) -> list[str]:
    """The calls a dispatch loop makes, in order, without the wait's argument."""
    tree = ast.parse(textwrap.dedent(source))
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            calls.append(node.func.attr)
    return calls


def test_the_replaced_flower_loop_is_the_one_this_code_was_written_against() -> None:
    """A Flower upgrade that changes ``add_messages_to_queue`` must be looked at, not overridden.

    The replacement in :func:`federated.simulation._prompt_dispatch` copies Flower 1.41's loop
    with a shorter wait; if Flower's loop gains or loses a step, this fails.
    """
    from flwr.server.superlink.fleet.vce import vce_api

    original = inspect.getsource(vce_api.add_messages_to_queue)
    assert "f_stop.wait(0.1)" in original
    assert list(inspect.signature(vce_api.add_messages_to_queue).parameters) == [
        "state",
        "queue",
        "nodes_mapping",
        "f_stop",
    ]
    with simulation._prompt_dispatch():
        replacement = inspect.getsource(vce_api.add_messages_to_queue)
        assert vce_api.add_messages_to_queue.__name__ == "add_messages_to_queue"
    ours = [c for c in _loop_shape(replacement) if c != "keys"]
    theirs = [c for c in _loop_shape(original) if c != "keys"]
    assert ours == theirs  # is_set, get_message_ins, put, wait: same steps, same order
    assert inspect.getsource(vce_api.add_messages_to_queue) == original  # restored after the run
