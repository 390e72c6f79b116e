"""Shares of a bounded resource among client addresses: once it runs short, a client that holds its share
gets no more, so that one client (an attacker's machine) cannot take all of it from the others."""

from __future__ import annotations

from collections import Counter


def crowded(total: int, limit: int, client_holds: int, share: float, floor: int = 0) -> bool:
    """More than 1 - share of `limit` is taken (`total`, counting what is asked), and this client would hold
    more than its share of it (`client_holds`, counting what is asked), or than `floor` if that is more (a
    client alone may always hold one body of the largest size)."""
    return total > (1 - share) * limit and client_holds > max(share * limit, floor)


def give_back(held: Counter[str], client: str, amount: int) -> None:
    """Gives back `amount` of what `client` holds; a client that holds nothing is forgotten."""
    held[client] -= amount
    if held[client] <= 0:
        del held[client]
