"""The neighbour graph: who masks with whom and who holds whose shares.

``neighbours=None`` is the complete graph of SecAgg (Bonawitz et al., CCS 2017): every client
pairs with every other. An even integer ``k`` gives the sparse graph of SecAgg+ (Bell et al.,
CCS 2020), built as Flower builds it: the server orders the clients in a ring by a uniformly
random permutation from the OS CSPRNG and links each client to the ``k/2`` clients on either side
(the circulant, or Harary, graph ``H(n, k)`` under a random labelling). It is exactly ``k``-regular
and ``k``-connected.

Every client's *neighbourhood* includes itself: it keeps one share of its own secrets, so a
neighbourhood of ``k + 1`` clients with threshold ``t`` tolerates ``k + 1 - t`` dropouts.

Trade-off
---------
- Complete graph: each client does ``n - 1`` key agreements, sends ``n - 1`` encrypted shares,
  and the server expands ``n - 1`` masks per dropped client; tolerates ``n - t`` dropouts in all
  and ``t - 1`` clients colluding with the server.
- ``k``-graph: ``O(k)`` per client and per dropout. The threshold applies per neighbourhood:
  at most ``k + 1 - t`` dropouts among any client and its neighbours, and fewer than ``t``
  colluders in any neighbourhood (else they hold ``t`` shares of both secrets of a neighbour).
  Pairwise masks cancel only along edges, so if the *honest surviving* clients split into
  several components, unmasking reveals each component's sum. ``H(n, k)`` cannot split while
  fewer than ``k`` clients are removed; beyond that the server refuses to unmask when dropouts
  split the survivors (:func:`components`), but it cannot see a split caused by colluders who
  stay online, so choose ``k`` above the expected number of dropouts plus colluders (Bell et al.
  show ``k = O(log n)`` suffices with high probability for a random graph).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from secure_agg.secagg import _entropy


def random_ring(client_ids: Sequence[int]) -> tuple[int, ...]:
    """The clients in a uniformly random order (Fisher-Yates with the OS CSPRNG)."""
    order = list(client_ids)
    for i in range(len(order) - 1, 0, -1):
        j = _entropy.random_below(i + 1)
        order[i], order[j] = order[j], order[i]
    return tuple(order)


def neighbourhoods(ring: Sequence[int], neighbours: int | None) -> dict[int, frozenset[int]]:
    """Each client's neighbourhood (itself included) for a ring order and degree ``k``.

    Parameters
    ----------
    ring : sequence of int
        The clients in ring order (ignored for the complete graph).
    neighbours : int or None
        ``k`` (even) or ``None`` for all pairs. ``k >= n - 1`` also gives all pairs.

    Returns
    -------
    dict of int to frozenset of int
    """
    count = len(ring)
    everyone = frozenset(ring)
    if neighbours is None or neighbours >= count - 1:
        return {client: everyone for client in ring}
    half = neighbours // 2
    return {
        client: frozenset(ring[(i + offset) % count] for offset in range(-half, half + 1))
        for i, client in enumerate(ring)
    }


def components(nodes: Collection[int], graph: Mapping[int, Iterable[int]]) -> list[frozenset[int]]:
    """The connected components of the subgraph of ``graph`` induced by ``nodes``."""
    remaining = set(nodes)
    found = []
    while remaining:
        start = remaining.pop()
        component = {start}
        frontier = [start]
        while frontier:
            node = frontier.pop()
            for other in graph[node]:
                if other in remaining:
                    remaining.discard(other)
                    component.add(other)
                    frontier.append(other)
        found.append(frozenset(component))
    return found
