"""Configuration: one YAML file with the sections ``graph``, ``router``, ``optimizer``,
``train``, ``backend`` and ``distributed``.

The defaults live in one place, the dataclasses below; the packaged ``baseline.yaml``
spells them out as a commented example (a test keeps the two equal). A file that sets some
keys means "the defaults plus these keys". :func:`load_config` reads a file (or none),
applies ``key.path=value`` overrides and validates every key: an unknown key, a wrong type or an out-of-range value raises
:class:`~energetic_wgpu.errors.ConfigError` whose message names the key path and the
allowed values, e.g. ``router.top_k must be an int >= 0, got -1``.

The result is a tree of frozen dataclasses; ``config.to_dict()`` gives back a plain dict
that :func:`from_dict` accepts again (round-trip).
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from .errors import ConfigError
from .shortrepr import short_repr
from .graph import GraphConfig

__all__ = [
    "Config",
    "GraphSection",
    "RouterSection",
    "ScheduleSection",
    "OptimizerSection",
    "TaskSection",
    "TrainSection",
    "BackendSection",
    "DistributedSection",
    "load_config",
    "from_dict",
    "parse_override",
    "default_config_path",
]


#: most nodes a YAML document may expand to (aliases counted at every use); a real config
#: has a few hundred, an "alias bomb" of 344 bytes has 9**9
MAX_YAML_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``) and
    refuses a mapping that repeats a key."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.setdefault(key, line)
                except TypeError:  # unhashable: the base class says so
                    continue
                if first != line:
                    raise ConfigError(f"duplicate key {short_repr(key)} on line {line} (first on line {first})")
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _expanded_nodes(root: yaml.Node, budget: int) -> int:
    """How many nodes ``root`` has with every alias expanded, or ``budget + 1`` as soon as
    that is exceeded (shared nodes are counted once per use, in time linear in the graph)."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if key in active:  # a recursive alias expands forever
            return budget + 1
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: Iterable[yaml.Node] = node.value
        elif isinstance(node, yaml.MappingNode):
            children = (n for pair in node.value for n in pair)
        else:
            children = ()
        for child in children:
            total += size(child)
            if total > budget:
                break
        active.discard(key)
        memo[key] = total = min(total, budget + 1)
        return total

    return size(root)


def _load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document safely: no duplicate keys, at most :data:`MAX_YAML_NODES`
    nodes after alias expansion. Raises ConfigError naming ``where``."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(
                f"{where} expands to more than {MAX_YAML_NODES:,} YAML nodes (aliases counted at every use); "
                "a configuration is far smaller, refusing it"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {short_repr(str(exc), 400)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)) from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be a configuration") from None
    finally:
        loader.dispose()


# ------------------------------------------------------------------ validators
# Each validator takes (value, key path) and returns the normalized value or raises.
Check = Callable[[Any, str], Any]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def int_range(lo: int | None = None, hi: int | None = None) -> Check:
    if lo is not None and hi is not None:
        desc = f"an int in [{lo}, {hi}]"
    elif lo is not None:
        desc = f"an int >= {lo}"
    else:
        desc = "an int"

    def check(v: Any, path: str) -> int:
        if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ConfigError(f"{path} must be {desc}, got {short_repr(v)}")
        return int(v)

    check.desc = desc  # type: ignore[attr-defined]
    return check


def float_range(lo: float | None = None, *, lo_open: bool = False, hi: float | None = None, hi_open: bool = False) -> Check:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    desc = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def check(v: Any, path: str) -> float:
        try:
            x = float(v) if _is_num(v) else math.nan
        except OverflowError:  # an int beyond the float range
            x = math.inf
        if not math.isfinite(x):
            raise ConfigError(f"{path} must be {desc}, got {short_repr(v)}")
        if lo is not None and (x < lo or (lo_open and x == lo)):
            raise ConfigError(f"{path} must be {desc}, got {short_repr(v)}")
        if hi is not None and (x > hi or (hi_open and x == hi)):
            raise ConfigError(f"{path} must be {desc}, got {short_repr(v)}")
        return x

    check.desc = desc  # type: ignore[attr-defined]
    return check


def optional(inner: Check) -> Check:
    def check(v: Any, path: str) -> Any:
        if v is None:
            return None
        try:
            return inner(v, path)
        except ConfigError as exc:
            raise ConfigError(f"{exc} (or null)") from None

    return check


def choice(*options: str) -> Check:
    def check(v: Any, path: str) -> str:
        if not isinstance(v, str) or v not in options:
            raise ConfigError(f"{path} must be one of {', '.join(repr(o) for o in options)}, got {short_repr(v)}")
        return v

    return check


def boolean(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{path} must be true or false, got {short_repr(v)}")
    return v


def opt_str(v: Any, path: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{path} must be a non-empty string or null, got {short_repr(v)}")
    return v


def adapter_value(v: Any, path: str) -> int | str | None:
    if v is None:
        return None
    if _is_int(v) and v >= 0:
        return int(v)
    if isinstance(v, str) and v:
        return v
    raise ConfigError(f"{path} must be an adapter index (int >= 0), a name substring or null, got {short_repr(v)}")


def betas_value(v: Any, path: str) -> tuple[float, float]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ConfigError(f"{path} must be a list of two numbers in [0, 1), got {short_repr(v)}")
    check = float_range(0.0, hi=1.0, hi_open=True)
    return (check(v[0], f"{path}[0]"), check(v[1], f"{path}[1]"))


def _f(default: Any, check: Check, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


def _section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"section": cls})


# -------------------------------------------------------------------- sections
@dataclass(frozen=True)
class GraphSection:
    """``graph``: the layered lattice (see :class:`~energetic_wgpu.GraphConfig`), or a graph
    file of the user's (``path``, see :func:`energetic_wgpu.userdata.load_graph`) instead of
    the lattice keys."""

    layers: int = _f(10, int_range(1))
    nodes_per_layer: int = _f(1024, int_range(1))
    local_neighbors: int = _f(8, int_range(0))
    jump_neighbors: int = _f(2, int_range(0))
    seed: int = _f(0, int_range(0))
    path: str | None = _f(None, opt_str, "a graph file (.npz or edge list) instead of the lattice")

    #: the keys that describe the lattice (not allowed together with ``path``)
    LATTICE_KEYS = ("layers", "nodes_per_layer", "local_neighbors", "jump_neighbors", "seed")

    def _check_given(self, given: set[str], path: str) -> None:
        both = [k for k in self.LATTICE_KEYS if k in given]
        if self.path is not None and both:
            raise ConfigError(
                f"{path}.path and the lattice keys ({', '.join(f'{path}.{k}' for k in both)}) are exclusive: "
                f"give either a graph file or a lattice"
            )

    def _dict_keys(self) -> tuple[str, ...]:
        return ("path",) if self.path is not None else self.LATTICE_KEYS

    def _cross_check(self, path: str) -> None:
        for key in ("local_neighbors", "jump_neighbors"):
            v = getattr(self, key)
            if v > self.nodes_per_layer:
                raise ConfigError(
                    f"{path}.{key} must be an int in [0, {path}.nodes_per_layer = {self.nodes_per_layer}], got {v}"
                )

    def to_graph_config(self) -> GraphConfig:
        return GraphConfig(self.layers, self.nodes_per_layer, self.local_neighbors, self.jump_neighbors, self.seed)


@dataclass(frozen=True)
class RouterSection:
    """``router``: hyper-parameters of the router and its propagation."""

    dim: int = _f(16, int_range(1))
    tau: float = _f(1.0, float_range(0.0, lo_open=True))
    alpha: float = _f(1.0, float_range())
    top_k: int = _f(4, int_range(0))
    steps: int = _f(1, int_range(1))
    retain_sinks: bool = _f(False, boolean)


@dataclass(frozen=True)
class ScheduleSection:
    """``optimizer.schedule``: the learning-rate schedule (``energetic_wgpu.make_schedule``)."""

    name: str = _f("cosine", choice("constant", "step", "cosine"))
    warmup_steps: int = _f(10, int_range(0))
    total_steps: int | None = _f(None, optional(int_range(1)))
    min_lr: float = _f(0.0, float_range(0.0))
    step_size: int = _f(100, int_range(1))
    gamma: float = _f(0.5, float_range(0.0, lo_open=True))


@dataclass(frozen=True)
class OptimizerSection:
    """``optimizer``: AdamW with global-norm clipping."""

    lr: float = _f(0.02, float_range(0.0))
    betas: tuple[float, float] = _f((0.9, 0.999), betas_value)
    eps: float = _f(1e-8, float_range(0.0, lo_open=True))
    weight_decay: float = _f(0.0, float_range(0.0))
    max_grad_norm: float | None = _f(1.0, optional(float_range(0.0, lo_open=True)))
    schedule: ScheduleSection = _section(ScheduleSection)


@dataclass(frozen=True)
class TaskSection:
    """``train.task``: the built-in synthetic routing task ("teacher") or the user's arrays
    ("arrays": ``path`` to a .npz with energies/targets [S, N], see
    :func:`energetic_wgpu.userdata.load_arrays`; ``val_fraction`` of the rows held out for
    ``val_loss``). See :mod:`energetic_wgpu.tasks`."""

    name: str = _f("teacher", choice("teacher", "arrays"))
    teacher_seed: int = _f(1, int_range(0))
    teacher_noise: float = _f(0.5, float_range(0.0))
    inject: str = _f("all", choice("all", "layer0"))
    path: str | None = _f(None, opt_str)
    val_fraction: float = _f(0.1, float_range(0.0, hi=1.0, hi_open=True))

    def _cross_check(self, path: str) -> None:
        if self.name == "arrays" and self.path is None:
            raise ConfigError(f"{path}.path must name a .npz file with energies and targets when {path}.name is 'arrays'")
        if self.name != "arrays" and self.path is not None:
            raise ConfigError(f"{path}.path is only read when {path}.name is 'arrays' (got name {self.name!r})")


@dataclass(frozen=True)
class TrainSection:
    """``train``: the training loop."""

    steps: int = _f(200, int_range(1))
    batch_size: int = _f(64, int_range(1))
    log_every: int = _f(10, int_range(1))
    checkpoint_every: int = _f(100, int_range(0))
    out_dir: str | None = _f(None, opt_str)
    seed: int = _f(0, int_range(0))
    loss: str = _f("mse", choice("mse", "cross_entropy"))
    entropy_lambda: float = _f(0.0, float_range())
    max_skipped_steps: int = _f(10, int_range(1))
    task: TaskSection = _section(TaskSection)


@dataclass(frozen=True)
class BackendSection:
    """``backend``: which backend (and wgpu adapter) runs the router."""

    name: str = _f("auto", choice("auto", "numpy", "wgpu"))
    adapter: int | str | None = _f(None, adapter_value)


@dataclass(frozen=True)
class DistributedSection:
    """``distributed``: data-parallel training on torch.distributed (see
    :mod:`energetic_wgpu.distributed`); ``train.batch_size`` is the global batch."""

    backend: str = _f("gloo", choice("gloo"))
    nproc: int = _f(1, int_range(1))
    adapter_per_rank: str = _f("round_robin", choice("round_robin", "same", "numpy"))
    timeout: float = _f(120.0, float_range(0.0, lo_open=True))
    check_every: int = _f(100, int_range(0))


@dataclass(frozen=True)
class Config:
    """A whole run configuration. Build with :func:`load_config` or :func:`from_dict`."""

    graph: GraphSection = _section(GraphSection)
    router: RouterSection = _section(RouterSection)
    optimizer: OptimizerSection = _section(OptimizerSection)
    train: TrainSection = _section(TrainSection)
    backend: BackendSection = _section(BackendSection)
    distributed: DistributedSection = _section(DistributedSection)

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (lists for tuples) that :func:`from_dict` turns back into this config."""
        return _to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: Iterable[str] | Mapping[str, Any]) -> "Config":
        """A new config with ``overrides`` applied ("key.path=value" strings or a {path: value} mapping)."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, Mapping) else (parse_override(o) for o in overrides)
        for path, value in items:
            _set_path(data, path, value)
        return from_dict(data)


# ------------------------------------------------------------------ machinery
def _to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        keys = obj._dict_keys() if hasattr(obj, "_dict_keys") else [f.name for f in fields(obj)]
        return {k: _to_dict(getattr(obj, k)) for k in keys}
    if isinstance(obj, tuple):
        return [_to_dict(v) for v in obj]
    return obj


def _build(cls: type, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'the configuration'} must be a mapping of keys to values, got {short_repr(data)}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"unknown key {short_repr(where)}; allowed keys {'in ' + path if path else 'at the top level'}: "
                              f"{', '.join(known)}")
    kwargs = {}
    for name, f in known.items():
        sub = f"{path}.{name}" if path else name
        if "section" in f.metadata:
            kwargs[name] = _build(f.metadata["section"], data.get(name), sub)
        elif name in data:
            kwargs[name] = f.metadata["check"](data[name], sub)
        else:
            kwargs[name] = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    obj = cls(**kwargs)
    given = getattr(obj, "_check_given", None)
    if given is not None:
        given({str(k) for k in data}, path)
    cross = getattr(obj, "_cross_check", None)
    if cross is not None:
        cross(path)
    return obj


def from_dict(data: Mapping[str, Any] | None) -> Config:
    """Validate a nested dict (missing keys take their defaults) into a :class:`Config`."""
    return _build(Config, data, "")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``"router.top_k=4"`` into ``("router.top_k", 4)``; the value is read with
    a YAML safe loader (so ``null``, ``true``, ``[0.9, 0.99]`` and ``1e-3`` work)."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"an override must look like key.path=value (e.g. router.top_k=4), got {short_repr(text)}")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"an override must name a key before '=', got {short_repr(text)}")
    value = _load_yaml(raw, f"the value of override {short_repr(key)}") if raw.strip() else None
    return key, value


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node: Any = data
    cls: type = Config
    for i, part in enumerate(parts):
        known = {f.name: f for f in fields(cls)}
        where = ".".join(parts[: i + 1])
        if part not in known:
            parent = ".".join(parts[:i]) or "the top level"
            raise ConfigError(f"unknown key {short_repr(where)}; allowed keys in {parent}: {', '.join(known)}")
        f = known[part]
        if i == len(parts) - 1:
            if "section" in f.metadata and not isinstance(value, Mapping):
                raise ConfigError(f"{where} is a section; set one of its keys, e.g. {where}.{fields(f.metadata['section'])[0].name}=...")
            node[part] = value
            return
        if "section" not in f.metadata:
            raise ConfigError(f"{where} is a value, not a section; cannot set {short_repr(path)}")
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
        cls = f.metadata["section"]


def default_config_path() -> Any:
    """The packaged ``baseline.yaml`` (an importlib.resources Traversable): every key with
    its default value and a comment; loading it gives the same config as no file."""
    return resources.files("energetic_wgpu") / "configs" / "baseline.yaml"


def load_config(path: str | Path | None = None, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Config:
    """Read a YAML config (the defaults when ``path`` is None), apply ``overrides``
    ("key.path=value" strings, or a {path: value} mapping) and validate.

    The defaults are the dataclass defaults of :class:`Config` (the packaged
    ``baseline.yaml`` spells them out); a file that omits a key gets its default.

    Raises:
        ConfigError: unreadable or non-UTF-8 file, bad YAML, a repeated key, an alias
            expansion beyond :data:`MAX_YAML_NODES`, unknown key or invalid value (the
            message names the key path and what is allowed).
    """
    if path is None:
        data: Any = {}
        where = "the defaults"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {where!r}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"config file {where!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
            ) from None
        data = _load_yaml(text, where)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping of sections (graph, router, ...), got {type(data).__name__}")
    items = overrides.items() if isinstance(overrides, Mapping) else [parse_override(o) for o in overrides]
    for key, value in items:
        _set_path(data, key, value)
    return from_dict(data)
