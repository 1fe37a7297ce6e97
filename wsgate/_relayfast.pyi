import builtins
from typing import Any

def scan(data: bytes, masked: bool, max_message: int | None, /) -> int: ...

class Pipe:
    max_message: int | None
    @property
    def frames(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    def __init__(
        self,
        transport: Any,
        protocol: Any,
        open_state: object,
        buffer_limit: int,
        max_message: int | None,
        masked: bool,
        holds: tuple[tuple[object, str], ...] = (),
    ) -> None: ...
    def __call__(self, data: builtins.bytes, /) -> int: ...
