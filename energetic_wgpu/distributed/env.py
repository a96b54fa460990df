"""The launch environment of a data-parallel rank (what ``torchrun`` and
``energetic-wgpu train --nproc N`` set) and the process group built from it."""

from __future__ import annotations

import atexit
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping

from ..errors import ConfigError, DistributedError
from ._torch import require_torch

__all__ = ["WorldEnv", "world_from_env", "init_from_env", "free_port", "ENV_KEYS"]

#: the variables a launcher sets for every rank
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class WorldEnv:
    """A rank's place in the world: ``rank`` in [0, world_size), ``local_rank`` on its machine
    (picks the adapter), and the rendezvous address of rank 0."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def _env_int(env: Mapping[str, str], key: str, minimum: int, default: int | None = None) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"${key} must be set for a data-parallel rank (the launcher sets {', '.join(ENV_KEYS)})")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"${key} must be an int >= {minimum}, got {raw[:50]!r}") from None
    if value < minimum:
        raise ConfigError(f"${key} must be an int >= {minimum}, got {value}")
    return value


def world_from_env(env: Mapping[str, str] | None = None) -> WorldEnv | None:
    """The :class:`WorldEnv` of this process, or None when ``$WORLD_SIZE`` is not set (not
    launched as a rank). Raises ConfigError naming a variable that is missing or malformed."""
    env = os.environ if env is None else env
    if not env.get("WORLD_SIZE"):
        return None
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    if rank >= world:
        raise ConfigError(f"$RANK must be in [0, $WORLD_SIZE - 1 = {world - 1}], got {rank}")
    local = _env_int(env, "LOCAL_RANK", 0, default=rank)
    addr = env.get("MASTER_ADDR") or ""
    if world > 1 and not addr:
        raise ConfigError("$MASTER_ADDR must be set for a data-parallel rank (the address of rank 0)")
    port = _env_int(env, "MASTER_PORT", 1, default=29500)
    if port > 65535:
        raise ConfigError(f"$MASTER_PORT must be a port in [1, 65535], got {port}")
    return WorldEnv(rank, world, local, addr or "127.0.0.1", port)


def init_from_env(world: WorldEnv | None = None, *, backend: str = "gloo", timeout: float = 120.0) -> WorldEnv:
    """Join the process group described by ``world`` (default: :func:`world_from_env`) with the
    torch.distributed ``backend`` (gloo). ``timeout`` (seconds) bounds the rendezvous and every
    collective: a rank that stops answering makes the others fail after it instead of hanging.

    The group it joins is destroyed at interpreter exit (an :mod:`atexit` handler, a no-op when
    you called ``torch.distributed.destroy_process_group()`` yourself): a process that exits
    with gloo's worker threads still alive can abort with "terminate called without an active
    exception" (SIGABRT) after its work is done."""
    torch = require_torch()
    dist = torch.distributed
    world = world if world is not None else world_from_env()
    if world is None:
        raise ConfigError("not launched as a data-parallel rank: $WORLD_SIZE is not set")
    if dist.is_initialized():
        return world
    try:
        dist.init_process_group(
            backend,
            init_method=f"tcp://{world.master_addr}:{world.master_port}",
            rank=world.rank,
            world_size=world.world_size,
            timeout=timedelta(seconds=float(timeout)),
        )
    except Exception as exc:  # noqa: BLE001 - torch raises several types (RuntimeError, DistStoreError...)
        raise DistributedError(
            f"rank {world.rank} could not join the process group at {world.master_addr}:{world.master_port} "
            f"within {timeout:g} s: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    atexit.unregister(_destroy_at_exit)  # once, however often a group is joined
    atexit.register(_destroy_at_exit)
    return world


def _destroy_at_exit() -> None:
    """Destroy the default process group while the interpreter is still whole (registered by
    :func:`init_from_env`); nothing when it is already destroyed."""
    dist = require_torch().distributed
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
