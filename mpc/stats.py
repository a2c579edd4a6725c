"""Cost counters: rounds, bytes sent and wall time per operation kind, per party.

Responsibility: record what each protocol operation cost, so that every run can report it.
Security model: counts only sizes and times, which every party can observe anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OpStats:
    """Totals for one operation kind at one party."""

    calls: int = 0
    rounds: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0

    def merge(self, other: OpStats) -> None:
        self.calls += other.calls
        self.rounds += other.rounds
        self.bytes_sent += other.bytes_sent
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "rounds": self.rounds,
            "bytes_sent": self.bytes_sent,
            "seconds": self.seconds,
        }


@dataclass
class PartyStats:
    """Per-operation-kind counters of one party."""

    by_kind: dict[str, OpStats] = field(default_factory=dict)

    def kind(self, name: str) -> OpStats:
        stats = self.by_kind.get(name)
        if stats is None:
            stats = self.by_kind[name] = OpStats()
        return stats

    @property
    def total(self) -> OpStats:
        out = OpStats()
        for stats in self.by_kind.values():
            out.merge(stats)
        return out

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {k: v.as_dict() for k, v in sorted(self.by_kind.items())}

    @staticmethod
    def from_dict(data: dict[str, dict[str, float]]) -> PartyStats:
        out = PartyStats()
        for kind, values in data.items():
            out.by_kind[kind] = OpStats(
                calls=int(values["calls"]),
                rounds=int(values["rounds"]),
                bytes_sent=int(values["bytes_sent"]),
                seconds=float(values["seconds"]),
            )
        return out


def format_stats(stats: dict[str, PartyStats]) -> str:
    """A small table: one row per (party, operation kind)."""
    head = ("party", "operation", "calls", "rounds", "bytes sent", "time s")
    lines = ["{:<10} {:<16} {:>7} {:>7} {:>12} {:>9}".format(*head)]
    for party, party_stats in stats.items():
        for kind, s in sorted(party_stats.by_kind.items()):
            row = (party, kind, s.calls, s.rounds, s.bytes_sent, f"{s.seconds:.4f}")
            lines.append("{:<10} {:<16} {:>7} {:>7} {:>12} {:>9}".format(*row))
    return "\n".join(lines)
