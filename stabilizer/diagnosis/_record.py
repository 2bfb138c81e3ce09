"""The `Diagnosis` record: the findings, their evidence and the per-epoch record."""

from __future__ import annotations

import dataclasses
import html
from typing import Any

from stabilizer.config import StabilityConfig
from stabilizer.diagnosis import _focus
from stabilizer.diagnosis._finding import Finding, _fmt, _pairs
from stabilizer.diagnosis._thresholds import (
    _ORDER,
    _RANK,
    CLIP_REPAIR,
    SEVERITIES,
    resolve_thresholds,
)
from stabilizer.lr_range import (
    LRRangeResult,
)
from stabilizer.scoring import jsonable
from stabilizer.space import SearchSpace
from stabilizer.telemetry import ProbeTrace

__all__ = ["Diagnosis"]


@dataclasses.dataclass
class Diagnosis:
    """Findings with their evidence, per-seed numbers and the per-epoch record."""

    findings: list[Finding]
    config: StabilityConfig
    seeds: list[int]
    steps: int
    batch_size: int
    thresholds: dict[str, float]
    per_seed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    epochs: list[list[dict[str, Any]]] = dataclasses.field(default_factory=list)
    initializers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    lr_range: LRRangeResult | None = None
    user_lr: float | None = None
    seconds: float = 0.0
    #: The range test repeated under `repair` (global-norm clipping at 1.0 when
    #: gradients explode or the run diverges, the initializer "auto" when the
    #: initialization is implicated; see the module docstring); None otherwise.
    repaired_lr_range: LRRangeResult | None = None
    #: The `StabilityConfig` fields `repaired_lr_range` ran under (empty without it).
    repair: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: What a KerasTuner-style `build_fn(hp)`'s hyperparameters took (empty otherwise).
    hp_values: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The probes themselves (one per seed; not serialised): `stabilize()` scores
    #: the baseline from them instead of probing the same configuration twice.
    traces: list[ProbeTrace] = dataclasses.field(default_factory=list, repr=False,
                                                 compare=False)

    # -- queries ----------------------------------------------------------------
    @property
    def clipped_lr_range(self) -> LRRangeResult | None:
        """`repaired_lr_range` when its repair clips (None otherwise)."""
        return self.repaired_lr_range if self.repair_clips() else None

    def repair_clips(self) -> bool:
        return self.repair.get("clipping") not in (None, "none", "keep")

    def repair_text(self) -> str:
        """The repair the second range test ran under, in words."""
        parts = []
        if self.repair_clips():
            parts.append(f"global-norm clipping ({float(self.repair.get('clip_value', 1.0))})"
                         if self.repair["clipping"] == "global_norm" else
                         f"clipping {self.repair['clipping']} ({self.repair.get('clip_value')})")
        if "initializer" in self.repair:
            parts.append(f"initializer {self.repair['initializer']}")
        return " and ".join(parts) or "the repair"

    def __contains__(self, code: str) -> bool:
        return any(f.code == code for f in self.findings)

    def get(self, code: str) -> Finding | None:
        return next((f for f in self.findings if f.code == code), None)

    def codes(self, severity: str = "info") -> list[str]:
        """Codes of the findings at `severity` or above."""
        return [f.code for f in self.findings if f.at_least(severity)]

    def above(self, severity: str = "info") -> list[Finding]:
        """Findings strictly above `severity` ("info" -> warnings and errors)."""
        return [f for f in self.findings if _RANK[f.severity] > _RANK[severity]]

    @property
    def worst(self) -> str:
        """"error", "warning", "info", or "ok" when there is no finding at all."""
        if not self.findings:
            return "ok"
        return SEVERITIES[max(_RANK[f.severity] for f in self.findings)]

    @property
    def healthy(self) -> bool:
        return not self.above("info")

    # -- output -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "worst": self.worst,
            "config": self.config.to_dict(),
            "seeds": self.seeds,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seconds": self.seconds,
            "user_lr": self.user_lr,
            "findings": [f.to_dict() for f in self.findings],
            "thresholds": self.thresholds,
            "per_seed": self.per_seed,
            "epochs": self.epochs,
            "initializers": self.initializers,
            "lr_range": self.lr_range.to_dict() if self.lr_range is not None else None,
            "repaired_lr_range": self.repaired_lr_range.to_dict()
            if self.repaired_lr_range is not None else None,
            "repair": self.repair,
            "hp_values": self.hp_values,
        })

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Diagnosis:
        """The inverse of `to_dict` (as stored on a study), without the traces."""
        findings = [Finding(**{**f, "dimensions": tuple(f.get("dimensions") or ())})
                    for f in data.get("findings") or []]
        lr, repaired = data.get("lr_range"), data.get("repaired_lr_range")
        repair = dict(data.get("repair") or {})
        if repaired is None and data.get("clipped_lr_range"):  # stored before repairs
            repaired, repair = data["clipped_lr_range"], dict(CLIP_REPAIR)
        return cls(findings=findings, config=StabilityConfig.from_dict(data.get("config") or {}),
                   seeds=list(data.get("seeds") or []), steps=int(data.get("steps") or 0),
                   batch_size=int(data.get("batch_size") or 0),
                   thresholds=resolve_thresholds(data.get("thresholds")),
                   per_seed=list(data.get("per_seed") or []),
                   epochs=list(data.get("epochs") or []),
                   initializers=list(data.get("initializers") or []),
                   lr_range=LRRangeResult.from_dict(lr) if lr else None,
                   repaired_lr_range=LRRangeResult.from_dict(repaired) if repaired else None,
                   repair=repair if repaired else {},
                   user_lr=data.get("user_lr"), seconds=float(data.get("seconds") or 0.0),
                   hp_values=dict(data.get("hp_values") or {}))

    def _header(self) -> str:
        what = self.config.describe()
        counts = {s: sum(f.severity == s for f in self.findings) for s in SEVERITIES}
        return (f"Diagnosis of {what}: {len(self.seeds)} seeds x {self.steps} steps, batch "
                f"{self.batch_size} ({self.seconds:.1f} s): {counts['error']} errors, "
                f"{counts['warning']} warnings, {counts['info']} info")

    def to_text(self, epochs: bool = True) -> str:
        lines = [self._header()]
        if not self.above("info"):
            lines.append("No finding above info: this training looks healthy on these seeds.")
        lines += [f.to_text() for f in self.findings]
        if self.lr_range is not None:
            lines.append(self.lr_range.to_text())
        if self.repaired_lr_range is not None:
            lines.append(f"Under {self.repair_text()}: " + self.repaired_lr_range.to_text())
        if epochs and self.epochs:
            lines.append(f"Per evaluation (seed {self.seeds[0]}):")
            lines += ["  " + row for row in _epoch_rows(self.epochs[0])]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def html_section(self) -> str:
        """A `<section>` for report.html: the findings table and the per-epoch table."""
        colors = {"error": "#c0392b", "warning": "#d68910", "info": "#5d6d7e"}
        rows = []
        for f in self.findings:
            evidence = html.escape(_pairs(f.evidence))
            layers = f"<br>layers: {html.escape(', '.join(f.layers))}" if f.layers else ""
            rows.append(
                f"<tr><td style='color:{colors[f.severity]};font-weight:bold'>{f.severity}</td>"
                f"<td><code>{f.code}</code><br>{html.escape(f.title)}</td>"
                f"<td>{html.escape(f.message)}{layers}</td><td>{evidence}</td>"
                f"<td>{html.escape(_pairs(f.thresholds))}</td>"
                f"<td>{html.escape(', '.join(f.dimensions))}</td></tr>")
        table = ("<table class='findings'><thead><tr><th>severity</th><th>finding</th>"
                 "<th>details</th><th>evidence</th><th>thresholds</th><th>addressed by</th>"
                 f"</tr></thead><tbody>{''.join(rows)}</tbody></table>") if rows \
            else "<p>No findings.</p>"
        parts = [f"<section class='diagnosis'><h2>Diagnosis</h2><p>{html.escape(self._header())}"
                 "</p>", table]
        if self.lr_range is not None:
            text = html.escape(self.lr_range.to_text()).replace("\n", "<br>")
            parts.append(f"<p>{text}</p>")
        if self.repaired_lr_range is not None:
            text = html.escape(self.repaired_lr_range.to_text()).replace("\n", "<br>")
            parts.append(f"<p>Under {html.escape(self.repair_text())}: {text}</p>")
        if self.epochs:
            rows_text = html.escape("\n".join(_epoch_rows(self.epochs[0])))
            parts.append(f"<h3>Per evaluation (seed {self.seeds[0]})</h3><pre>{rows_text}</pre>")
        parts.append("</section>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.html_section()

    # -- before / after ---------------------------------------------------------------
    def compare(self, after: Diagnosis) -> list[dict[str, Any]]:
        """One row per finding code in either diagnosis: its severity before and after.

        `self` is the "before" (e.g. the user's configuration), `after` the
        diagnosis of the chosen configuration; a missing finding is None. The
        main evidence numbers of both sides come along.
        """
        codes = [c for c in _ORDER if (c in self or c in after) and c != "not_checked"]
        rows = []
        for code in codes:
            was, now = self.get(code), after.get(code)
            rows.append({"code": code, "title": (was or now).title,  # type: ignore[union-attr]
                         "before": was.severity if was else None,
                         "after": now.severity if now else None,
                         "evidence_before": was.evidence if was else {},
                         "evidence_after": now.evidence if now else {}})
        return rows

    def compare_text(self, after: Diagnosis) -> str:
        """`compare` as a small table for the terminal."""
        lines = [f"{'finding':24} {'before':8} after"]
        for row in self.compare(after):
            lines.append(f"{row['code']:24} {row['before'] or '-':8} {row['after'] or '-'}")
        return "\n".join(lines)

    def focus(self, space: SearchSpace | str | dict[str, Any]) -> SearchSpace:
        """`space` narrowed and reordered by the findings at warning level or above.

        The changes are listed in the returned space's description and by
        `focus_notes(space)`; the rules are `stabilizer.diagnosis._focus.narrow`'s.
        """
        return _focus.focus(self, space)

    def focus_notes(self, space: SearchSpace | str | dict[str, Any]) -> list[str]:
        """What `focus(space)` changes, one line per dimension."""
        return _focus.focus_notes(self, space)

    def first_trial(self, space: SearchSpace | str | dict[str, Any]) -> dict[str, Any]:
        """Parameters for a first trial in the focused space (for `study.enqueue_trial`);
        see `stabilizer.diagnosis._focus.first_trial`."""
        return _focus.first_trial(self, space)

    def range_test_trial(self, space: SearchSpace | str | dict[str, Any]
                         ) -> dict[str, Any] | None:
        """The LR range test's suggestion alone, as parameters of the focused space;
        see `stabilizer.diagnosis._focus.range_test_trial`."""
        return _focus.range_test_trial(self, space)


def _epoch_rows(records: list[dict[str, Any]]) -> list[str]:
    rows = []
    for r in records:
        lr = r.get("learning_rate")
        head = (f"epoch {r['epoch']} step {r['step']}: lr {_fmt(lr) if lr is not None else 'n/a'}, "
                f"val_loss {_fmt(r.get('val_loss'))}")
        rows.append(head)
        for name, s in r.get("layers", {}).items():
            extra = ""
            if "update_ratio" in s:
                extra = f", update/weight {_fmt(s['update_ratio'])}"
            rows.append(f"    {name}: weight mean {_fmt(s['weight_mean'])}, std "
                        f"{_fmt(s['weight_std'])}{extra}")
        for key, label in (("dead_share", "dead units"), ("saturated_share", "saturated")):
            for name, value in (r.get(key) or {}).items():
                rows.append(f"    {name}: {label} {_fmt(value)}")
    return rows
