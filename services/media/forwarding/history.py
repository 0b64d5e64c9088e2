"""Retransmission history: a ring of the last packets of one source."""


class History:
    """Packets by 16-bit sequence number; a slot is reused after `size` packets."""

    def __init__(self, size: int = 1024) -> None:
        if size & (size - 1):
            raise ValueError("size must be a power of two")
        self._mask = size - 1
        self._seqs: list[int] = [-1] * size
        self._packets: list[bytes | None] = [None] * size

    def put(self, seq: int, packet: bytes) -> None:
        i = seq & self._mask
        self._seqs[i] = seq
        self._packets[i] = packet

    def get(self, seq: int) -> bytes | None:
        i = seq & self._mask
        if self._seqs[i] != seq:
            return None
        return self._packets[i]
