"""The registered primitives, one module per family; ``__all__`` collects each family's public names."""
from . import elementwise, indexing, linalg, nn, reduce, shape
from .elementwise import *  # noqa: F401,F403
from .indexing import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .nn import *  # noqa: F401,F403
from .reduce import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403

from . import decomp, special  # noqa: E402,F401 - registered here, public as jt.linalg.NAME, jt.special.NAME

FAMILIES = (elementwise, indexing, linalg, nn, reduce, shape)
__all__ = [n for fam in FAMILIES for n in fam.__all__]
