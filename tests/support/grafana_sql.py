"""What Grafana does to a PostgreSQL panel's SQL before the database sees it, so tests can
run a dashboard's queries as Grafana would.

Two steps, in Grafana's order:

1. the browser replaces template variables (`templateSrv.replace` with the SQL data
   sources' `interpolateVariable`): a multi-value or "include All" variable becomes
   quoted literals joined by commas (`'a','b'`, quotes doubled); a single-value one (a
   text box) is inserted with its quotes doubled but not quoted; "All" becomes every
   option, or the variable's custom all value inserted as it is;
2. the server expands the macros (pkg/tsdb/grafana-postgresql-datasource/macros.go):
   `$__timeFilter(x)` -> `x BETWEEN '<from>' AND '<to>'` (RFC 3339 in UTC),
   `$__timeFrom()`, `$__timeTo()`, `$__timeGroup(x,'1d')` ->
   `floor(extract(epoch from x)/86400)*86400` and `$__timeGroupAlias` (the same
   `AS "time"`). A macro's arguments end at the first `)`, as in Grafana.

Only what opsagent's dashboards use is implemented; anything else raises, so a new
macro cannot slip through untested.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

ALL = "$__all"
# templateSrv's variable syntax: $name, [[name]] and ${name} (formats are not used here)
_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}"
)
# macros.go: sExpr
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")
_INTERVAL = re.compile(r"^(\d+)(ms|s|m|h|d|w|M|y)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def quote_literal(value: str) -> str:
    """The PostgreSQL query model's quoteLiteral."""
    return "'" + value.replace("'", "''") + "'"


def _format(value: str | Sequence[str], variable: Mapping[str, Any]) -> str:
    """SqlDatasource.interpolateVariable."""
    if isinstance(value, str):
        if variable.get("multi") or variable.get("includeAll"):
            return quote_literal(value)
        return value.replace("'", "''")
    return ",".join(quote_literal(v) for v in value)


def interpolate(
    sql: str,
    variables: Sequence[Mapping[str, Any]],
    values: Mapping[str, str | Sequence[str]],
    options: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The SQL with the dashboard's template variables replaced by `values` (a list for
    a multi-value variable, `[ALL]` for "All"; `options` are each variable's values,
    used for "All" when the variable has no custom all value)."""
    by_name = {v["name"]: v for v in variables}

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        variable = by_name.get(name)
        if variable is None:
            return match.group(0)  # not a variable of the dashboard: left as it is
        value = values[name]
        if value == ALL or (not isinstance(value, str) and list(value[:1]) == [ALL]):
            if variable.get("allValue"):
                return interpolate(variable["allValue"], variables, values, options)
            value = list((options or {})[name])
        return _format(value, variable)

    return _VARIABLE.sub(one, sql)


def rfc3339nano(moment: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: fraction without trailing zeros, then Z."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def _interval_seconds(text: str) -> float:
    """gtime.ParseInterval, in seconds (days and weeks on a UTC server)."""
    match = _INTERVAL.match(text.strip("'"))
    if match is None:
        raise ValueError(f"error parsing interval {text}")
    number, unit = int(match.group(1)), match.group(2)
    if unit in ("M", "y"):
        raise ValueError(f"{text}: months and years are not calendar months in Grafana")
    return number * _UNIT_SECONDS[unit]


def go_float(value: float) -> str:
    """Go's %v of a float64 (strconv 'g', shortest): the fewest digits that round-trip,
    in exponent form when the exponent is below -4 or from 6 up (1e6 is "1e+06")."""
    number = Decimal(repr(float(value))).normalize()
    sign, digits, _ = number.as_tuple()
    exponent = number.adjusted()
    if exponent < -4 or exponent >= 6:
        text = "".join(map(str, digits))
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{'-' if sign else ''}{mantissa}e{exponent:+03d}"
    return format(number, "f")


def expand_macros(sql: str, start: datetime, end: datetime) -> str:
    """The PostgreSQL macro engine of Grafana's server, for a time range."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "__timeGroup":  # pre-5.3 compatibility: a ',' after adds the alias
            index = sql.find(match.group(0))
            after = index + len(match.group(0))
            if index >= 0 and after < len(sql) and sql[after] == ",":
                name = "__timeGroupAlias"
        args = [a.strip(" ") for a in match.group(2).split(",")]
        return _macro(name, args, start, end)

    return _MACRO.sub(one, sql)


def _macro(name: str, args: list[str], start: datetime, end: datetime) -> str:
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{rfc3339nano(start)}' AND '{rfc3339nano(end)}'"
    if name == "__timeFrom":
        return f"'{rfc3339nano(start)}'"
    if name == "__timeTo":
        return f"'{rfc3339nano(end)}'"
    if name in ("__timeGroup", "__timeGroupAlias"):
        if len(args) != 2:
            raise ValueError(f"macro {name} needs time column and interval (no fill here)")
        seconds = go_float(_interval_seconds(args[1]))
        group = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
        return group + ' AS "time"' if name == "__timeGroupAlias" else group
    raise ValueError(f"unknown macro {name!r}")


def grafana_sql(
    sql: str,
    variables: Sequence[Mapping[str, Any]],
    values: Mapping[str, str | Sequence[str]],
    start: datetime,
    end: datetime,
    options: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """A panel's SQL as the database receives it from Grafana: variables, then macros."""
    return expand_macros(interpolate(sql, variables, values, options), start, end)
