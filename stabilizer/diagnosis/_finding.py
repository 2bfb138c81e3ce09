"""One finding: a diagnosed problem with the numbers that triggered it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from stabilizer.diagnosis._thresholds import _RANK, SEVERITIES
from stabilizer.errors import ConfigError
from stabilizer.scoring import jsonable

__all__ = ["Finding"]


@dataclasses.dataclass
class Finding:
    """One diagnosed problem, with the numbers that triggered it."""

    code: str
    title: str
    severity: str  # "info", "warning" or "error"
    evidence: dict[str, float]
    thresholds: dict[str, float]
    dimensions: tuple[str, ...]
    message: str = ""
    layers: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ConfigError(f"severity={self.severity!r}: expected one of "
                              f"{', '.join(SEVERITIES)}")

    def at_least(self, severity: str) -> bool:
        return _RANK[self.severity] >= _RANK[severity]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["dimensions"] = list(self.dimensions)
        return jsonable(out)

    def to_text(self) -> str:
        lines = [f"{self.severity.upper():8} {self.code}: {self.title}"]
        if self.message:
            lines.append(f"         {self.message}")
        if self.layers:
            lines.append(f"         layers: {', '.join(self.layers)}")
        if self.evidence:
            lines.append(f"         evidence: {_pairs(self.evidence)}")
        if self.thresholds:
            lines.append(f"         thresholds: {_pairs(self.thresholds)}")
        if self.dimensions:
            lines.append(f"         addressed by: {', '.join(self.dimensions)}")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
