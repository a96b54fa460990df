"""The pending submission: one command encoder, its open compute pass, and what it uses.

What the buffer pool and the encoder share: :attr:`Submission.in_flight` holds the uid of
every buffer a pending command reads or writes. A buffer released while in flight is
*deferred* (``defer``) and goes back to the pool (or is destroyed) only after the submit —
``queue.write_buffer`` into a recycled buffer would run at submit time, *before* the
encoder's commands. ``take_deferred`` hands them over after each submit or abandon.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Submission", "TS_MAX_PASSES"]

#: compute passes one ``Runtime.gpu_time`` call can time
TS_MAX_PASSES = 64


class Submission:
    """The pending encoder and compute pass of one device (created lazily)."""

    __slots__ = ("device", "encoder", "cpass", "pass_pipeline", "pass_bind_group", "in_flight", "deferred",
                 "ts_query", "ts_passes", "on_pass")

    def __init__(self, device: Any, on_pass: Any) -> None:
        self.device = device
        self.encoder: Any = None
        self.cpass: Any = None
        # the pipeline and bind group last set in the open pass (redundant sets are skipped)
        self.pass_pipeline: Any = None
        self.pass_bind_group: Any = None
        self.in_flight: set[int] = set()
        self.deferred: list[Any] = []
        # timestamp queries (Runtime.gpu_time): the query set being written, passes timed so far
        self.ts_query: Any = None
        self.ts_passes = 0
        self.on_pass = on_pass  # called when a compute pass opens (listeners' pass_begun)

    def command_encoder(self) -> Any:
        if self.encoder is None:
            self.encoder = self.device.create_command_encoder()
        return self.encoder

    def compute_pass(self) -> Any:
        """The open compute pass (opened, with timestamp writes while timing, if none is)."""
        if self.cpass is None:
            self.pass_pipeline = self.pass_bind_group = None  # a new pass has no state
            if self.ts_query is not None and self.ts_passes < TS_MAX_PASSES:
                i = self.ts_passes
                self.ts_passes += 1
                self.cpass = self.command_encoder().begin_compute_pass(
                    timestamp_writes={
                        "query_set": self.ts_query,
                        "beginning_of_pass_write_index": 2 * i,
                        "end_of_pass_write_index": 2 * i + 1,
                    }
                )
            else:
                self.cpass = self.command_encoder().begin_compute_pass()
            self.on_pass()
        return self.cpass

    def end_pass(self) -> None:
        if self.cpass is not None:
            self.cpass.end()
            self.cpass = None

    def outside_pass(self) -> Any:
        """The encoder with no compute pass open (for copies, clears and query resolves)."""
        self.end_pass()
        return self.command_encoder()

    def defer(self, pooled: Any, destroy: bool = False) -> None:
        """Hand ``pooled`` back after the next submit (``destroy``: destroy it, do not pool)."""
        if destroy:
            pooled.usage = -1  # marks "destroy, do not pool"
        self.deferred.append(pooled)

    def take_deferred(self) -> list[Any]:
        """Forget the encoder (submitted or abandoned) and return the deferred buffers."""
        self.cpass = None
        self.encoder = None
        self.in_flight.clear()
        deferred, self.deferred = self.deferred, []
        return deferred
