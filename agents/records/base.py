"""The base of every typed record: frozen, its JSON its fields in order; and `Details`,
what every kind of result's details may hold."""

from __future__ import annotations

import os
import sys
import types
from typing import Any, Self

from pydantic import (
    VERSION,
    BaseModel,
    ConfigDict,
    ValidationError,
)

from agents.results import CheckResult

_ALL_OFF = ("__all__", "1", "true")  # the settings that disable every plugin (pydantic 2)


def _no_plugin_search() -> None:
    """opsagent uses no pydantic plugin. `PYDANTIC_DISABLE_PLUGINS` stops pydantic's search
    for one, but its plugin loader imports `importlib.metadata` (with email, csv and
    zipfile) before it reads that setting, at the first model built: about 5 MiB and
    20-40 ms of every command. A stand-in loader that finds none, as the setting makes the
    real one do, spares that; a different setting (some plugins kept) keeps the real one."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    name = "pydantic.plugin._loader"
    if name in sys.modules or os.environ["PYDANTIC_DISABLE_PLUGINS"] not in _ALL_OFF:
        return
    loader = types.ModuleType(name, "No pydantic plugins (agents.records.base).")
    loader.get_plugins = lambda: ()  # type: ignore[attr-defined]
    sys.modules[name] = loader


_no_plugin_search()

# Whether models build their validators when first used rather than at import (records
# and the config's models): only from pydantic 2.14, whose lazy build takes a lock. Before
# it, two of the agent's worker threads using a model first at the same time could race.
DEFER_BUILD = tuple(int(part) for part in VERSION.split(".")[:2]) >= (2, 14)

# a JSON number as it came: an int stays an int, a float a float, so output is unchanged
Number = int | float

# every kind of result a scheduled job emits (the rest are checks, or internal)
JOB_KINDS = frozenset({"backup", "backup_source", "restore_test", "prune", "forget"})


class Record(BaseModel):
    """A frozen record whose JSON is its fields, in order; built when first used (so a
    command pays only for its own records), as `DEFER_BUILD` allows."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=DEFER_BUILD)

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object printed for it."""
        return self.model_dump()


class Details(Record):
    """What every kind's details may hold: the exception when its body raised."""

    exception: str | None = None
    where: str | None = None

    @classmethod
    def of(cls, result: CheckResult) -> Self:
        """The result's details as this record; an entry of the wrong type (an old or
        foreign row) is kept as it is rather than lost."""
        try:
            return cls.model_validate(dict(result.details))
        except ValidationError:
            return cls.model_construct(**dict(result.details))

    def to_details(self) -> dict[str, Any]:
        """The details object a result carries: the fields that have a value."""
        return self.model_dump(exclude_none=True)
