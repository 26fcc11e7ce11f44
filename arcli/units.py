"""Likelihood units (DESIGN.md "Units"): every model is scored in nats; reports use the field's unit.

Bits per sample (audio) and bits per dimension (images) are nats / ln 2; text reports nats per token
with their perplexity; a density over real-valued frames (VRNN) stays in nats per frame.
"""

from __future__ import annotations

import math

LN2 = math.log(2.0)
UNITS = ("bits/sample", "bits/dim", "nats/token", "nats/frame")  # nats/frame: a density over real-valued frames (VRNN)


def nats_to(unit: str, nats_per_unit: float) -> float:
    """Nats per unit in the unit's own terms: bits for bits/*, perplexity for nats/token."""
    if unit.startswith("bits/"):
        return nats_per_unit / LN2
    if unit == "nats/frame":  # a continuous density: no perplexity
        return nats_per_unit
    return math.exp(nats_per_unit) if nats_per_unit < 700 else math.inf


def nll_metrics(nats_per_unit: float, unit: str) -> dict[str, float]:
    """The NLL in the field's unit: {"bits_per_sample": ...}, {"bits_per_dim": ...} or
    {"nats_per_token": ..., "perplexity": ...}. Bits are nats / ln 2."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    name = unit.replace("/", "_per_")
    if unit == "nats/token":
        return {name: nats_per_unit, "perplexity": nats_to(unit, nats_per_unit)}
    return {name: nats_to(unit, nats_per_unit)}


def format_nll(nats_per_unit: float, unit: str) -> str:
    """'2.951 bits/sample', '3.012 bits/dim', '2.104 nats/token (perplexity 8.20)'."""
    if unit == "nats/token":
        return f"{nats_per_unit:.3f} nats/token (perplexity {nats_to(unit, nats_per_unit):.2f})"
    if unit == "nats/frame":
        return f"{nats_per_unit:.1f} nats/frame"
    return f"{nats_to(unit, nats_per_unit):.3f} {unit}"
