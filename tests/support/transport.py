"""A fake asyncio transport for feeding the service's HTTP protocol (service/server/http_protocol.py) in
process, as a socket would, and reading what it wrote."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


class WritesTransport(asyncio.Transport):
    """Each write (or writelines, which uvloop sends in one writev) as one entry of `writes`."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.writes.append(b"".join(list_of_data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    @property
    def written(self) -> bytes:
        """Everything written, in order."""
        return b"".join(self.writes)
