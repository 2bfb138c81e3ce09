"""The unstable-training zoo: small models that train badly for one named reason each.

Every scenario is a `Scenario`: a model factory with the user's starting
configuration (optimizer, learning rate, initializers), data (scikit-learn's
bundled sets or seeded generated data, no download), the user's batch size, the
search space a user would pick, and the cause it shows. One healthy control must
stay healthy. Look scenarios up by name::

    from benchmarks import zoo
    scenario = zoo.get("exploding_relu_mlp_high_lr")
    model, (x, y) = scenario.build_fn(), scenario.load_data()
"""

from __future__ import annotations

from benchmarks.zoo import autoencoder, convolutional, dense, generated, recurrent
from benchmarks.zoo._scenario import Scenario

__all__ = ["SCENARIOS", "Scenario", "generated", "get", "names"]

#: name -> Scenario, in the order of the benchmark tables (the healthy control last).
SCENARIOS: dict[str, Scenario] = {
    s.name: s for s in sorted((*dense.SCENARIOS, *recurrent.SCENARIOS,
                               *convolutional.SCENARIOS, *autoencoder.SCENARIOS),
                              key=lambda s: s.healthy)
}


def names(*, healthy: bool | None = None) -> list[str]:
    """Scenario names (only the healthy or only the unstable ones when asked)."""
    return [n for n, s in SCENARIOS.items() if healthy is None or s.healthy == healthy]


def get(name: str) -> Scenario:
    """The scenario called `name` (``gen-<family>-<seed>``: a generated one,
    `benchmarks.zoo.generated`); a `KeyError` naming the known ones otherwise."""
    if generated.is_generated(name):
        return generated.generate(name)
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"no zoo scenario {name!r}; expected one of "
                       f"{', '.join(SCENARIOS)}") from None
