"""The one table of names for the contract's enums: tier, data class, objective, role,
finish reason, circuit state and context strategy, lower-case name <-> proto number.

The names are the router's own (``router.yaml``, ``router.types``): ``hosted``,
``public``, ``cheapest``, ``user``, ``stop``, ``half_open``. Each table is read from the
proto enum itself (the value names without their prefix, lower-cased), so a value added
to the contract has a name here at once; ``*_UNSPECIFIED`` (0) has none.

    TIERS["gpu"]                      # 2 (TIER_GPU)
    TIERS.name(tpb.TIER_EDGE)         # "edge"; TIERS.name(0) == "" (or a default)
    TIERS.number("cloud", "pin_tiers")  # OptionError: pin_tiers: 'cloud' is not one of ...
    sorted(TIERS)                     # the names, e.g. for argparse choices
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from hybrid_router.client.errors import OptionError
from hybrid_router.v1 import router_pb2 as rpb
from hybrid_router.v1 import sessions_pb2 as spb
from hybrid_router.v1 import types_pb2 as tpb

__all__ = [
    "BACKEND_TIERS",
    "CIRCUIT_STATES",
    "CONTEXT_STRATEGIES",
    "DATA_CLASSES",
    "FINISH_REASONS",
    "OBJECTIVES",
    "ROLES",
    "TIERS",
    "TOOL_CHOICES",
    "RESPONSE_FORMATS",
    "EnumTable",
]


class EnumTable(Mapping[str, int]):
    """Names -> numbers of one proto enum (a read-only mapping, in the proto's order),
    and back with :meth:`name`."""

    def __init__(self, what: str, enum: Any, prefix: str) -> None:
        self.what = what
        self.enum_name: str = enum.DESCRIPTOR.name
        self._by_name: dict[str, int] = {
            label.removeprefix(prefix).lower(): number
            for label, number in enum.items()
            if number != 0
        }
        self._by_number = {number: name for name, number in self._by_name.items()}

    def __getitem__(self, name: str) -> int:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"EnumTable({self.enum_name}: {', '.join(self._by_name)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def name(self, number: int, default: str = "") -> str:
        """The name of ``number``; ``default`` for UNSPECIFIED or a number this build of
        the contract does not know."""
        return self._by_number.get(number, default)

    def number(self, name: str, option: str | None = None) -> int:
        """The number of ``name``; "" is UNSPECIFIED (0). An unknown name raises
        :class:`OptionError` naming ``option`` (default: the table's own name)."""
        if not name:
            return 0
        try:
            return self._by_name[name]
        except KeyError:
            raise OptionError(
                option or self.what, f"{name!r} is not one of {', '.join(self._by_name)}"
            ) from None

    def numbers(self, names: Iterable[str], option: str | None = None) -> list[int]:
        """:meth:`number` of each name; an empty name is an error here."""
        out = []
        for n in names:
            if not n:
                raise OptionError(option or self.what, f"'' is not one of {', '.join(self)}")
            out.append(self.number(n, option))
        return out


TIERS = EnumTable("tier", tpb.Tier, "TIER_")
#: The tiers a backend can be in, what pin_tiers may name: every tier but ``cache`` (the
#: router's response cache, the tier of a cache hit; exclude_tiers=["cache"] skips it).
BACKEND_TIERS: tuple[str, ...] = tuple(n for n in TIERS if n != "cache")
DATA_CLASSES = EnumTable("data_class", tpb.DataClass, "DATA_CLASS_")
ROLES = EnumTable("role", tpb.Role, "ROLE_")
FINISH_REASONS = EnumTable("finish_reason", tpb.FinishReason, "FINISH_REASON_")
OBJECTIVES = EnumTable("objective", rpb.Objective, "OBJECTIVE_")
CIRCUIT_STATES = EnumTable("circuit", rpb.CircuitState, "CIRCUIT_STATE_")
CONTEXT_STRATEGIES = EnumTable("context_strategy", spb.ContextStrategy, "CONTEXT_STRATEGY_")
TOOL_CHOICES = EnumTable("tool_choice", tpb.ToolChoiceMode, "TOOL_CHOICE_MODE_")
RESPONSE_FORMATS = EnumTable("response_format", tpb.ResponseFormatType, "RESPONSE_FORMAT_TYPE_")
