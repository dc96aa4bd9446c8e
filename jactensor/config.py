"""The one config object: memory limit, NaN policy, debug checks.

Settings are validated when set. ``config.override(...)`` is context-local (a
``contextvars.ContextVar``): each thread and each asyncio task sees its own
overrides, so two threads overriding the limit never see each other's value.
Assigning an attribute (``config.max_jacobian_bytes = ...``) changes the
process-wide default that every context without an override reads.
"""
import contextlib
import contextvars
import math
import numbers

__all__ = ["Config", "config"]


def _positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0 or v != int(v):
        raise ValueError(f"config.{name} must be a non-negative whole number of bytes (an int); got {v!r}")
    return int(v)


def _terms(name, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"config.{name} must be an int >= 1; got {v!r}")
    return int(v)


def _flag(name, v):
    if not isinstance(v, (bool, int)) or v not in (0, 1):
        raise ValueError(f"config.{name} must be True or False; got {v!r}")
    return bool(v)


_SETTINGS = {  # name: (default, validator, doc)
    "max_jacobian_bytes": (2 * 1024**3, _positive_int,
                           "a Jacobian, a factor, a contraction intermediate or a batch of tangents above this many "
                           "bytes is refused with JacobianTooLargeError (or processed in chunks that fit) before "
                           "it is allocated"),
    "check_nan": (False, _flag,
                  "if True, NaN or Inf in an argument, in a value computed inside a traced function, or in a "
                  "cotangent or tangent raises NonFiniteError naming the primitive; by default they propagate "
                  "as in numpy"),
    "debug": (False, _flag, "if True, every primitive's Jacobian is checked against out.shape + in.shape"),
    "max_terms": (4, _terms, "a structured Jacobian with more terms than this is merged (sums multiply in chains)"),
}

_overrides = contextvars.ContextVar("jactensor_config_overrides", default=None)


class Config:
    """Settings read by the engine (see the module docstring); each validated when set."""

    __slots__ = ("_defaults",)

    def __init__(self):
        object.__setattr__(self, "_defaults", {k: v[0] for k, v in _SETTINGS.items()})

    def __getattr__(self, name):  # only reached for names that are not settings
        raise AttributeError(f"config has no setting {name!r}; valid: {sorted(_SETTINGS)}")

    def __setattr__(self, name, value):
        self._defaults[name] = self._validate(name, value)

    @staticmethod
    def _validate(name, value):
        if name not in _SETTINGS:
            raise AttributeError(f"config has no setting {name!r}; valid: {sorted(_SETTINGS)}")
        return _SETTINGS[name][1](name, value)

    def as_dict(self):
        return {k: getattr(self, k) for k in _SETTINGS}

    def __repr__(self):
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"

    @contextlib.contextmanager
    def override(self, **changes):
        """Temporarily change settings in this context only: ``with config.override(max_jacobian_bytes=2**20): ...``."""
        bad = sorted(set(changes) - set(_SETTINGS))
        if bad:
            raise TypeError(f"config.override: unknown setting(s) {bad}; valid: {sorted(_SETTINGS)}")
        new = dict(_overrides.get() or {})
        new.update({k: self._validate(k, v) for k, v in changes.items()})
        token = _overrides.set(new)
        try:
            yield self
        finally:
            _overrides.reset(token)

    __call__ = override


def _setting(name):
    defaults_of = Config._defaults.__get__

    def get(self):
        ov = _overrides.get()
        if ov is not None and name in ov:
            return ov[name]
        return defaults_of(self)[name]
    return property(get, lambda self, v: Config.__setattr__(self, name, v), doc=_SETTINGS[name][2])


for _name in _SETTINGS:
    setattr(Config, _name, _setting(_name))

Config.__doc__ += "\n\n" + "\n".join(f"{k}: {v[2]} (default {v[0]!r})." for k, v in _SETTINGS.items())

config = Config()
