"""The content-addressed uniform buffers (the structs and their packing: kernels.Uniform).

A uniform buffer is immutable and cached by its bytes (LRU), so a repeated dispatch binds the
same buffer (and the same cached bind group) every time.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

from .arrays import PooledBuffer
from .submission import Submission

__all__ = ["uniform_key", "UniformCache", "UNIFORM_CACHE_SIZE"]

#: uniform buffers kept (least recently used ones are destroyed)
UNIFORM_CACHE_SIZE = 4096


def uniform_key(data: bytes) -> bytes:
    """The key of ``data`` in the uniform cache: padded with zeros to a multiple of 16 bytes
    (16 zero bytes for empty data)."""
    pad = (-len(data)) % 16
    data = bytes(data) + b"\0" * pad if pad or not data else bytes(data)
    return data if data else b"\0" * 16


class UniformCache:
    """Immutable uniform buffers by content (LRU of :data:`UNIFORM_CACHE_SIZE` entries).

    Args:
        queue: the device queue (``write_buffer`` of each new buffer's bytes).
        new_buffer: ``f(size, usage, kind)`` creating a pooled buffer (``BufferPool.new_buffer``).
        destroy: ``f(pooled)`` destroying one now. submission: defers the destruction of an
            evicted buffer that a pending command still binds.
        usage: the usage flags of uniform buffers.
    """

    def __init__(self, queue: Any, new_buffer: Callable[..., PooledBuffer], destroy: Callable[[PooledBuffer], None],
                 submission: Submission, usage: int) -> None:
        self.queue = queue
        self.new_buffer = new_buffer
        self.destroy = destroy
        self.submission = submission
        self.usage = usage
        self.capacity = UNIFORM_CACHE_SIZE
        self.buffers: collections.OrderedDict[bytes, PooledBuffer] = collections.OrderedDict()

    def get(self, data: bytes) -> PooledBuffer:
        """The uniform buffer holding ``data`` (padded as :func:`uniform_key`), made if new."""
        data = uniform_key(data)
        hit = self.buffers.get(data)
        if hit is not None:
            self.buffers.move_to_end(data)
            return hit
        pooled = self.new_buffer(len(data), self.usage, "uniform")
        self.queue.write_buffer(pooled.buffer, 0, data)
        self.buffers[data] = pooled
        if len(self.buffers) > self.capacity:
            _, old = self.buffers.popitem(last=False)
            if old.uid in self.submission.in_flight:
                self.submission.defer(old, destroy=True)  # destroyed after the next submit
            else:
                self.destroy(old)
        return pooled
