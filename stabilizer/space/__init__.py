"""Search spaces: which stabilization knobs are searched, over which ranges.

The bundled spaces are YAML files in `stabilizer/space/bundled/`, shipped in the wheel;
`load_space` reads one of them by name, a YAML file by path, or a mapping.
"""

from stabilizer.space._space import (
    CONDITIONS,
    DIMENSIONS,
    Choice,
    Dimension,
    Fixed,
    FloatRange,
    SearchSpace,
    Suggester,
    bundled_spaces,
    load_space,
)

__all__ = [
    "CONDITIONS",
    "DIMENSIONS",
    "Choice",
    "Dimension",
    "FloatRange",
    "Fixed",
    "SearchSpace",
    "Suggester",
    "bundled_spaces",
    "load_space",
]
