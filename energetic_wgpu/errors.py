"""The library's error hierarchy.

Every error raised on purpose by energetic_wgpu derives from :class:`EnergeticError`.
Errors about bad arguments also derive from the matching builtin (``ValueError``,
``TypeError``) so that generic handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "EnergeticError",
    "ShapeError",
    "InvalidArgumentError",
    "ConfigError",
    "DataError",
    "BackendUnavailable",
    "ShaderCompileError",
    "DeviceError",
    "DeviceLimitError",
    "CheckpointError",
    "RunLockedError",
    "TrainingError",
    "DistributedError",
]


class EnergeticError(Exception):
    """Base class of every error raised by energetic_wgpu."""


class ShapeError(EnergeticError, ValueError):
    """An array has the wrong shape, length, rank or dtype for the argument it was passed as."""


class InvalidArgumentError(EnergeticError, ValueError):
    """An argument has the right shape but a value that is not allowed (out of range, non-finite...)."""


class ConfigError(EnergeticError, ValueError):
    """A configuration key is unknown or its value is out of range; the message names the key path."""


class DataError(ConfigError):
    """A user graph or data file (``graph.path``, ``train.task.path``) cannot be used: missing
    arrays, a shape that does not fit the graph, non-finite values, a bad edge-list line. The
    message starts with the file name (and the line number for text files)."""


class BackendUnavailable(EnergeticError, RuntimeError):
    """A requested backend (or adapter) cannot start; the message carries the reason."""


class ShaderCompileError(EnergeticError, RuntimeError):
    """A WGSL shader failed to compile or a pipeline failed to build; carries the shader name and the compiler's text."""


class DeviceError(EnergeticError, RuntimeError):
    """The GPU device rejected a command (validation error, lost device); the backend stays usable where possible."""


class DeviceLimitError(EnergeticError, ValueError):
    """A request exceeds a limit of the device (buffer size, binding size, workgroup count); names the limit."""


class CheckpointError(EnergeticError):
    """A checkpoint file is corrupt, truncated, of another graph or of an unsupported format version."""


class RunLockedError(EnergeticError, RuntimeError):
    """Another process is training into the same output folder; names the folder and its PID."""


class TrainingError(EnergeticError, RuntimeError):
    """The training loop stopped because it cannot make progress (e.g. too many skipped steps)."""


class DistributedError(EnergeticError, RuntimeError):
    """Data-parallel training failed across ranks: a rank died or timed out, could not open its
    adapter, or the replicas' parameters diverged; the message names the rank or the step."""
