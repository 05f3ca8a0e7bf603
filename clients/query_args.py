"""The Timeline filters on the command line, for every command that queries incidents
(`ceasefire timeline`, and the exports, maps and charts): `add_query_options(parser)` adds
them, `query_from_args(args)` turns what was given into an api.TimelineRequest.

Times are absolute ISO 8601 (UTC when no zone is given) or relative to this machine's
clock: a span before now as `7d`, `36h`, `90m`, `2w`, `45s`, an ISO 8601 duration (`P7D`,
`PT36H`, `P1W`, `P1DT12H`), or `7 days ago`; `now` is now. A relative time is only how the
query is written: the server judges the query as asked and records nothing from it.
Party codes, sides and names go to the server as typed (it normalizes their case and refuses
an unknown one, naming the field); categories and statuses are checked here against the
names the ledger uses (`small_arms_fire`, `jointly_confirmed`, ...), in any case, with `-`
or `_`. A value a user gives wrongly is a QueryArgsError (a ValueError: exit code 2).
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable

from ceasefire.v1 import ledger_service_pb2 as api
from ceasefire.v1 import statements_pb2 as pb

from clients.incidents_cli import log_index
from ledger.clock import now_us, parse_iso, to_timestamp

# The names the command line and the docs use: the enum names without their prefix, lower
# case (as `ceasefire timeline --json` prints them).
CATEGORIES = {
    name.removeprefix("INCIDENT_CATEGORY_").lower(): value
    for name, value in pb.IncidentCategory.items()
    if value != pb.INCIDENT_CATEGORY_UNSPECIFIED
}
STATUSES = {
    name.removeprefix("INCIDENT_STATUS_").lower(): value
    for name, value in api.IncidentStatus.items()
    if value != api.INCIDENT_STATUS_UNSPECIFIED
}
ORDERS = {
    "incident-time": api.TIMELINE_ORDER_INCIDENT_TIME,
    "log-index": api.TIMELINE_ORDER_LOG_INDEX,
}

_SECOND_US = 1_000_000
_UNIT_US = {
    "s": _SECOND_US,
    "m": 60 * _SECOND_US,
    "h": 3600 * _SECOND_US,
    "d": 86_400 * _SECOND_US,
    "w": 7 * 86_400 * _SECOND_US,
}
_WORDS = {"second": "s", "minute": "m", "hour": "h", "day": "d", "week": "w"}
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)", re.IGNORECASE)
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?\s+ago", re.IGNORECASE)
_ISO_DURATION = re.compile(
    r"P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
    re.IGNORECASE,
)
RELATIVE_HELP = "7d, 36h, 90m, 2w, P7D, PT36H, '7 days ago'"
TIME_HELP = f"ISO 8601 time (UTC if no zone), or before now: {RELATIVE_HELP}"


class QueryArgsError(ValueError):
    """A filter given on the command line that cannot be read; names the option."""


def parse_duration_us(text: str) -> int | None:
    """A span as microseconds: `36h`, `7d`, `P7D`, `PT36H`, `P1DT12H` (None when `text`
    is not a span)."""
    text = text.strip()
    found = _SPAN.fullmatch(text)
    if found:
        unit = found.group(2).lower()[0]
        return round(float(found.group(1)) * _UNIT_US[unit])
    iso = _ISO_DURATION.fullmatch(text)
    if iso and text.upper() not in ("P", "PT") and not text.upper().endswith("T"):
        return round(sum(float(iso.group(u) or 0) * _UNIT_US[u] for u in ("w", "d", "h", "m", "s")))
    return None


def parse_time(text: str, now: int, option: str = "time") -> int:
    """A time on the command line, in microseconds: ISO 8601, `now`, or a span before
    `now` (see the module's doc). QueryArgsError naming `option` otherwise."""
    text = text.strip()
    if text.lower() == "now":
        return now
    ago = _AGO.fullmatch(text)
    if ago:
        return now - round(float(ago.group(1)) * _UNIT_US[_WORDS[ago.group(2).lower()]])
    span = parse_duration_us(text)
    if span is not None:
        return now - span
    if text[:1] in ("p", "P"):
        raise QueryArgsError(
            f"{option} {text!r}: an ISO 8601 duration of weeks, days, hours, minutes and "
            "seconds (years and months have no fixed length: give days, e.g. P30D)"
        )
    try:
        return parse_iso(text)
    except ValueError:
        raise QueryArgsError(
            f"{option} {text!r}: neither an ISO 8601 time nor a span before now ({RELATIVE_HELP})"
        ) from None


def _values(given: Iterable[str] | None) -> list[str]:
    """Repeated and comma-separated values, each once, in the order given."""
    out: list[str] = []
    for item in given or []:
        for value in item.split(","):
            value = value.strip()
            if value and value not in out:
                out.append(value)
    return out


def _named(given: Iterable[str] | None, known: dict[str, int], option: str) -> list[int]:
    out = []
    for value in _values(given):
        key = value.lower().replace("-", "_")
        if key not in known:
            raise QueryArgsError(f"{option} {value!r}: one of {', '.join(known)}")
        out.append(known[key])
    return out


def _number(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise QueryArgsError(f"{option} {text!r}: not a number") from None
    if not math.isfinite(value):
        raise QueryArgsError(f"{option} {text!r}: not a finite number")
    return value


def parse_metres(text: str, option: str) -> float:
    """Metres: `5000`, `5000m`, `5km`, `2.5 km`."""
    t = text.strip().lower().replace(" ", "")
    if t.endswith("km"):
        return _number(t[:-2], option) * 1000
    return _number(t.removesuffix("m"), option)


def _numbers(text: str, n: int, option: str, form: str) -> list[float]:
    parts = text.split(",")
    if len(parts) != n:
        raise QueryArgsError(f"{option} {text!r}: give {form}")
    return [_number(p.strip(), option) for p in parts]


def add_query_options(parser: argparse.ArgumentParser, *, paging: bool = True) -> None:
    """The Timeline filters as options of `parser` (in a group of their own); with
    `paging`, also --order, --limit and --page-token. --as-of-index is always added."""
    g = parser.add_argument_group("filters (all given must match; repeatable ones match any)")
    g.add_argument("--since", metavar="TIME", help=f"incident ended at or after: {TIME_HELP}")
    g.add_argument("--until", metavar="TIME", help="incident started at or before (as --since)")
    g.add_argument("--logged-since", metavar="TIME", help="report logged (log's clock) at or after")
    g.add_argument("--logged-until", metavar="TIME", help="report logged at or before")
    g.add_argument(
        "--party",
        action="append",
        metavar="CODE",
        help="reporting party, any case (repeatable, or a,b)",
    )
    g.add_argument(
        "--category",
        action="append",
        metavar="NAME",
        help=f"category (repeatable, or a,b): {', '.join(CATEGORIES)}",
    )
    g.add_argument(
        "--status",
        action="append",
        metavar="NAME",
        help=f"derived status (repeatable, or a,b): {', '.join(STATUSES)}",
    )
    g.add_argument(
        "--blames", action="append", metavar="CODE", help="the party the report blames (repeatable)"
    )
    g.add_argument(
        "--side",
        action="append",
        metavar="SIDE",
        help="the side recorded for the place: a party code, neither or ambiguous (repeatable)",
    )
    g.add_argument(
        "--bbox",
        metavar="MIN_LAT,MIN_LON,MAX_LAT,MAX_LON",
        help="the report's anchor point in this box (degrees)",
    )
    g.add_argument("--near", metavar="LAT,LON", help="within --within metres of this point")
    g.add_argument(
        "--within",
        metavar="METRES",
        help="with --near: geodesic distance, e.g. 5000, 5km (at most 500 km)",
    )
    g.add_argument(
        "--near-border",
        metavar="METRES",
        help="within this distance of the border (or of --segment), e.g. 2000, 2km; a line "
        "crossing it or an area meeting it is at 0",
    )
    g.add_argument(
        "--segment",
        metavar="NAME",
        help="with --near-border: within that distance of this border segment (e.g. main, "
        "nakhchivan), whichever segment is nearest",
    )
    g.add_argument("--text", metavar="TEXT", help="narrative contains TEXT (any case)")
    g.add_argument(
        "--investigation", type=log_index, metavar="INDEX", help="incidents this request names"
    )
    g.add_argument(
        "--collapse-duplicates",
        action="store_true",
        help="only the first report of each group of likely duplicates",
    )
    g.add_argument(
        "--as-of-index",
        type=log_index,
        default=0,
        metavar="N",
        help="as the log stood before entry N: later entries (amendments, answers, findings, "
        "retractions) are ignored (default: now)",
    )
    if paging:
        g.add_argument(
            "--order",
            choices=sorted(ORDERS),
            default="incident-time",
            help="incident time (default) or log index",
        )
        g.add_argument(
            "--limit", type=int, default=0, metavar="N", help="at most N (default and cap 10,000)"
        )
        g.add_argument(
            "--page-token",
            metavar="TOKEN",
            help="the next page of the same query, after the incident this token came with",
        )


def query_from_args(args: argparse.Namespace, *, now: int | None = None) -> api.TimelineRequest:
    """The TimelineRequest the options of `add_query_options` ask for. Relative times are
    taken before `now` (default: this machine's clock)."""
    now = now_us() if now is None else now
    request = api.TimelineRequest(as_of_index=args.as_of_index)
    for field in ("since", "until", "logged_since", "logged_until"):
        text = getattr(args, field)
        if text:
            flag = "--" + field.replace("_", "-")
            getattr(request, field).CopyFrom(to_timestamp(parse_time(text, now, flag)))
    request.parties.extend(_values(args.party))
    request.categories.extend(_named(args.category, CATEGORIES, "--category"))  # type: ignore[arg-type]
    request.statuses.extend(_named(args.status, STATUSES, "--status"))  # type: ignore[arg-type]
    request.blamed_parties.extend(_values(args.blames))
    request.sides.extend(_values(args.side))
    if args.bbox:
        lat0, lon0, lat1, lon1 = _numbers(args.bbox, 4, "--bbox", "MIN_LAT,MIN_LON,MAX_LAT,MAX_LON")
        request.box.CopyFrom(
            api.GeoBox(min_latitude=lat0, min_longitude=lon0, max_latitude=lat1, max_longitude=lon1)
        )
    if (args.near is None) != (args.within is None):
        raise QueryArgsError("--near LAT,LON and --within METRES go together")
    if args.near is not None:
        lat, lon = _numbers(args.near, 2, "--near", "LAT,LON")
        request.near.center.latitude, request.near.center.longitude = lat, lon
        request.near.within_m = parse_metres(args.within, "--within")
    if args.segment and args.near_border is None:
        # A segment is a place to be near, not a property of the report: how near it must
        # be is the question (whichever segment is nearest the report).
        raise QueryArgsError("--segment NAME goes with --near-border METRES")
    if args.near_border is not None:
        request.near_border.within_m = parse_metres(args.near_border, "--near-border")
        request.near_border.segment = args.segment or ""
    if args.text:
        request.text = args.text
    if args.investigation:
        request.investigation_index = args.investigation
    request.collapse_duplicates = bool(args.collapse_duplicates)
    if getattr(args, "order", None):
        request.order = ORDERS[args.order]
    if getattr(args, "limit", 0):
        if not 0 <= args.limit < 2**32:
            raise QueryArgsError(f"--limit {args.limit}: 0 (all, up to 10,000) or more")
        request.limit = args.limit
    if getattr(args, "page_token", None):
        request.page_token = args.page_token
    return request
