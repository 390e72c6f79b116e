"""A delivery that ends when its client goes away: uvicorn drops what is sent to a client that has gone
without an error, so a stream's delivery would otherwise go on, and its computation with it, to the stream's
end for nobody. Cancelled instead, it releases its answer at once, and the compute pool stops computing the
rest (service/server/compute_pool.py, service/stops.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from starlette.types import Receive


async def _gone(receive: Receive) -> None:
    """Returns when the client goes away (its request's body has been read: the next message is that)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(delivery: Awaitable[None], receive: Receive) -> bool:
    """Awaits `delivery` (raising what it raises), or cancels it once the client goes away: False then."""
    delivering = asyncio.ensure_future(delivery)
    leaving = asyncio.ensure_future(_gone(receive))
    try:
        await asyncio.wait({delivering, leaving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        leaving.cancel()
        if not delivering.done():
            delivering.cancel()
            await asyncio.gather(delivering, return_exceptions=True)
    if delivering.cancelled():
        return False
    delivering.result()
    return True
