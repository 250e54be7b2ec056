"""One photo of the inventory as the table, the exports and the API see it: the model's values,
the technician's corrections kept beside them, the confidences and what is still to be checked."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from runtime.tasks.plate import FIELD_KEYS
from runtime.tasks.plate_confidence import flagged


@dataclass
class Correction:
    """The technician's value for one field (None: "not on the plate") and when it was set;
    a value equal to the model's marks the field as checked."""
    value: object
    changed: str


@dataclass
class Row:
    """One photo of the inventory as the table shows it."""
    id: int
    sha256: str
    name: str
    ext: str | None
    state: str
    error: str | None
    added: str
    source: str
    position: float
    width: int | None = None
    height: int | None = None
    read_at: str | None = None
    read_s: float | None = None
    engine: str | None = None
    model: str | None = None
    fields: dict | None = None
    confidence: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    raw: str | None = None
    corrections: dict[str, Correction] = field(default_factory=dict)
    rev: int = 0

    def value(self, key: str):
        """What the table holds for ``key``: the technician's value when there is one."""
        if key in self.corrections:
            return self.corrections[key].value
        return (self.fields or {}).get(key)

    def model_value(self, key: str):
        return (self.fields or {}).get(key)

    def unchecked(self) -> list[str]:
        """The fields read but not yet looked at (no correction or confirmation)."""
        return [k for k in FIELD_KEYS if self.fields is not None and k not in self.corrections]

    def flagged(self, below: float) -> list[str]:
        """Unchecked fields whose confidence is under ``below``: to be looked at twice."""
        low = set(flagged(self.confidence, below))
        return [k for k in self.unchecked() if k in low]

    def as_json(self, flag_below: float) -> dict:
        return {"id": self.id, "sha256": self.sha256, "name": self.name, "state": self.state, "error": self.error,
                "added": self.added, "source": self.source, "position": self.position,
                "width": self.width, "height": self.height, "read_at": self.read_at,
                "read_s": None if self.read_s is None else round(self.read_s, 2),
                "engine": self.engine, "model": self.model, "fields": self.fields,
                "confidence": self.confidence, "warnings": self.warnings,
                "corrections": {k: {"value": c.value, "changed": c.changed} for k, c in self.corrections.items()},
                "unchecked": self.unchecked() if self.fields is not None else [],
                "flagged": self.flagged(flag_below) if self.fields is not None else [], "rev": self.rev}


def from_db(p, corrections: dict) -> Row:
    load = lambda s, d: json.loads(s) if s else d  # noqa: E731
    return Row(id=p["id"], sha256=p["sha256"], name=p["name"], ext=p["ext"], state=p["state"], error=p["error"],
               added=p["added"], source=p["source"], position=p["position"], width=p["width"], height=p["height"],
               read_at=p["read_at"], read_s=p["read_s"], engine=p["engine"], model=p["model"],
               fields=load(p["fields"], None), confidence=load(p["confidence"], {}), warnings=load(p["warnings"], []),
               raw=p["raw"], corrections=corrections, rev=p["rev"])
