"""The one config object: memory limit, NaN policy, debug checks."""
import contextlib
from dataclasses import dataclass, fields

__all__ = ["Config", "config"]


@dataclass
class Config:
    """Settings read by the engine.

    max_jacobian_bytes: a Jacobian (or contraction intermediate) above this many
        bytes is refused with JacobianTooLargeError before it is allocated.
    check_nan: if True, NaN or Inf in a primitive's array inputs raises
        NonFiniteError; by default they propagate as in numpy.
    debug: if True, every structured Jacobian checks its labels against its
        shapes when built (the shape convention out.shape + in.shape).
    max_terms: a structured Jacobian with more terms than this is merged
        into one term (sums of products multiply when chained).
    """

    max_jacobian_bytes: int = 2 * 1024**3
    check_nan: bool = False
    debug: bool = False
    max_terms: int = 4

    @contextlib.contextmanager
    def override(self, **changes):
        """Temporarily change settings: ``with config.override(max_jacobian_bytes=1e6): ...``."""
        names = {f.name for f in fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise TypeError(f"config.override: unknown setting(s) {bad}; valid: {sorted(names)}")
        old = {k: getattr(self, k) for k in changes}
        for k, v in changes.items():
            setattr(self, k, v)
        try:
            yield self
        finally:
            for k, v in old.items():
                setattr(self, k, v)

    __call__ = override


config = Config()
