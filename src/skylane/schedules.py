"""Schedule maths: when a cron, interval or RRULE schedule fires, in UTC, correct across
daylight-saving changes.

Pure functions and classes: no I/O, no database. `parse_schedule` validates a `ScheduleSpec` and
returns a `Timetable`, which answers "what are the next occurrences after t", "which occurrences
fall in (start, end]" and "what was the latest occurrence at or before t".

Every answer is an aware `datetime` in `datetime.timezone.utc`, and deterministic: the same
inputs always give exactly equal values, so two processes computing the same occurrence agree
(the store keeps one run per schedule and occurrence time).

The three kinds, one class each:

- `CronTimetable`: a 5-field cron expression evaluated on the wall clock of the schedule's time
  zone, with Debian cron's daylight-saving rules (as implemented by cronsim).
- `IntervalTimetable`: every N seconds aligned to an anchor; whole days keep the anchor's wall
  clock time, anything else is exact elapsed time.
- `RRuleTimetable`: an RFC 5545 recurrence rule (dateutil) expanded on the wall clock of the time
  zone.

On the wall clock, a local time that does not exist (spring forward) and one that occurs twice
(fall back) are handled as each class documents.
"""

from __future__ import annotations

import abc
import difflib
import enum
import heapq
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import islice
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError
from dateutil.rrule import rrule, rruleset, rrulestr

from skylane.errors import InvalidInput

MIN_INTERVAL_SECONDS = 1
MAX_INTERVAL_SECONDS = 100 * 365 * 86400
# The anchor of an interval schedule that names none: midnight at the start of 2020, read as
# local time in the schedule's time zone (so "every 86400 s" fires at local midnight).
DEFAULT_INTERVAL_ANCHOR = datetime(2020, 1, 1)

_DAY_SECONDS = 86400
# Anchors well inside what datetime can hold in every zone.
_MIN_ANCHOR = datetime(1900, 1, 1, tzinfo=UTC)
_MAX_ANCHOR = datetime(9000, 1, 1, tzinfo=UTC)
# Wider than the largest difference between two UTC offsets of one zone (about 26 h), so any
# wall-clock time more than this before t's wall-clock time is certainly before t.
_WALL_SLACK = timedelta(days=2)

_CRON_FIELDS_HELP = (
    "a cron expression has 5 fields: minute (0-59), hour (0-23), day of month (1-31, L), "
    "month (1-12, JAN-DEC), day of week (0-7, SUN-SAT), e.g. '30 2 * * *'; "
    "or one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually"
)
_CRON_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_RRULE_FREQS = ("YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY")
_ICAL_VALUE = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})(Z?))?$")


class CatchUp(enum.StrEnum):
    """What the scheduler does with occurrences missed while it was down."""

    LATEST = "latest"  # run once, for the most recent missed occurrence
    ALL = "all"  # run every missed occurrence
    NONE = "none"  # skip them all; carry on from now


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as the user gives it: exactly one of `cron`, `interval_seconds`, `rrule`.

    `anchor` (timezone-aware) is where an interval schedule is aligned, and the DTSTART of an
    RRULE that has none in its text; cron ignores it. See `default_anchor` for what to store
    when the user gives none.
    """

    cron: str | None = None
    interval_seconds: int | None = None
    rrule: str | None = None
    timezone: str = "UTC"
    anchor: datetime | None = None


# --- validation helpers ---------------------------------------------------------------------


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def check_timezone(name: str, *, field: str) -> ZoneInfo:
    """The `ZoneInfo` for an IANA time zone name; `InvalidInput` naming `field` if unknown."""
    hint = "use an IANA name such as Europe/Berlin or America/New_York"
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"a time zone is required; {hint}", field=field)
    zone: ZoneInfo | None
    try:
        # "localtime" names whatever the host is set to: not a portable schedule zone.
        zone = None if name.lower() == "localtime" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        zone = None
    if zone is None:
        message = f"unknown time zone {name!r}; {hint}"
        try:
            names = _zone_names() - {"localtime", "posixrules", "Factory"}
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.8)
        except OSError:  # pragma: no cover - no zone list to suggest from
            close = []
        if close:
            message += f" (did you mean {close[0]}?)"
        raise InvalidInput(message, field=field)
    return zone


def _as_utc(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _resolve_wall(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive wall-clock time in `zone`.

    A time that occurs twice (fall back) takes its first occurrence; a time that does not exist
    (spring forward) is moved forward by the length of the gap (02:30 in a 02:00->03:00 gap
    becomes 03:30). Both are what `fold=0` means for zoneinfo (PEP 495).
    """
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _wall_lower_bound(wall: datetime, zone: ZoneInfo) -> datetime:
    """A UTC instant no later than `_resolve_wall(w)` for every wall time `w >= wall`.

    Wall-clock order is not UTC order inside a gap (02:30 becomes 03:30 local, after 03:00), so
    RRULE occurrences are re-sorted with this bound: once the expansion has reached `wall`,
    nothing earlier than the bound can still come.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return min(first, second)


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int, got {limit!r}")


def _format_local(value: datetime) -> str:
    if value.second or value.microsecond:
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M")


def _format_seconds(seconds: int) -> str:
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


# --- timetables -------------------------------------------------------------------------------


class Timetable(abc.ABC):
    """When a parsed schedule fires.

    Inputs are aware datetimes in any zone; outputs are aware datetimes in UTC, ascending,
    without duplicates. `limit` bounds the work as well as the answer.
    """

    kind: ClassVar[str]
    # Fires forever (cron, interval): callers need not look one time further to know there is
    # a next one. An RRULE may end (COUNT, UNTIL).
    endless: ClassVar[bool] = False
    spec: ScheduleSpec
    zone: ZoneInfo  # the zone whose wall clock the schedule follows

    @abc.abstractmethod
    def _iter_after(self, t: datetime) -> Iterator[datetime]:
        """Occurrences strictly after `t` (UTC), ascending, without duplicates, lazily."""

    @abc.abstractmethod
    def latest_at_or_before(self, t: datetime) -> datetime | None:
        """The most recent occurrence at or before `t` (inclusive), or None if there is none."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short human description, e.g. "cron 30 2 * * * (Europe/Berlin)"."""

    def iter_after(self, t: datetime) -> Iterator[datetime]:
        """Occurrences strictly after `t`, ascending, lazily: for walking a schedule once where
        several `after`/`between` calls would each start again."""
        return self._iter_after(_as_utc(t, "t"))

    def after(self, t: datetime, *, limit: int) -> list[datetime]:
        """The next occurrences strictly after `t`, ascending, at most `limit` of them (fewer,
        or none, when a finite schedule runs out)."""
        t_utc = _as_utc(t, "t")
        _check_limit(limit)
        if limit == 0:
            return []
        return list(islice(self._iter_after(t_utc), limit))

    def between(self, start: datetime, end: datetime, *, limit: int) -> list[datetime]:
        """Occurrences `x` with `start < x <= end`, ascending, at most `limit` (the earliest)."""
        start_utc = _as_utc(start, "start")
        end_utc = _as_utc(end, "end")
        _check_limit(limit)
        found: list[datetime] = []
        if limit == 0 or end_utc <= start_utc:
            return found
        for occurrence in self._iter_after(start_utc):
            if occurrence > end_utc:
                break
            found.append(occurrence)
            if len(found) >= limit:
                break
        return found

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class CronTimetable(Timetable):
    """A 5-field cron expression on the wall clock of `zone`, with Debian cron's DST rules.

    cronsim decides how a daylight-saving change is handled, from the expression's shape:

    - Minute and hour fields that both start with something other than `*` (a fixed time such
      as `30 2 * * *`, or `0 1-5 * * *`): the expression is matched against local wall-clock
      time. A time that does not exist on a spring-forward day fires once, right after the gap
      (02:30 in Europe/Berlin on 2026-03-29 fires at 03:00 CEST = 01:00 UTC). A time that occurs
      twice on a fall-back day fires once, at its first occurrence (01:30 in America/New_York on
      2026-11-01 fires at 01:30 EDT = 05:30 UTC only).
    - A minute or hour field starting with `*` (`*/30 * * * *`, `0 * * * *`, `0 */2 * * *`):
      the expression is matched against the local time of every real instant, as cron does.
      Slots in the repeated hour fire twice (once per offset); slots inside a spring-forward gap
      do not exist and are skipped. So `0 * * * *` fires 25 times on a fall-back day and 23
      times on a spring-forward day.

    Occurrences have whole seconds (microsecond 0). cronsim gives up looking after 50 years
    without a match; the schedule then simply ends.

    Known cronsim limit: where clocks fall back by half an hour (Australia/Lord_Howe), the
    every-instant mode can skip slots in the half hour after the change when iterating through
    it, while a query starting inside that half hour finds them.
    """

    kind = "cron"
    endless = True

    def __init__(self, spec: ScheduleSpec, zone: ZoneInfo, expression: str) -> None:
        self.spec = spec
        self.zone = zone
        self.expression = expression  # always 5 fields (macros translated)
        self._source = " ".join(spec.cron.split()) if spec.cron else expression

    def _iter_after(self, t: datetime) -> Iterator[datetime]:
        last = t
        try:
            # In wall-clock mode cronsim drops the offset and restarts from the local wall time,
            # so from an instant in the second (fold=1) pass of a repeated hour it yields a few
            # first-pass occurrences that are already past; the filter drops them. It also drops
            # duplicates (two slots in one gap both fire right after it).
            for occurrence in CronSim(self.expression, t.astimezone(self.zone)):
                value = occurrence.astimezone(UTC)
                if value > last:
                    last = value
                    yield value
        except OverflowError:  # ran past year 9999
            return

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        t_utc = _as_utc(t, "t")
        # Reverse iteration yields occurrences strictly before its start (whole seconds), so
        # start one second after t to include t itself.
        start = (t_utc.replace(microsecond=0) + timedelta(seconds=1)).astimezone(self.zone)
        candidate = None
        try:
            for count, occurrence in enumerate(CronSim(self.expression, start, reverse=True)):
                value = occurrence.astimezone(UTC)
                if value <= t_utc:
                    candidate = value
                    break
                if count > 10_000:  # pragma: no cover - defensive, never seen
                    break
        except OverflowError:
            return None
        if candidate is None:
            return None
        # Reverse iteration in wall-clock mode can skip a first-pass occurrence when t is in the
        # second pass of a repeated hour; forward iteration is the reference, so walk forward
        # from the candidate to the last occurrence that is still <= t.
        latest = candidate
        for value in self._iter_after(candidate):
            if value > t_utc:
                break
            latest = value
        return latest

    def describe(self) -> str:
        return f"cron {self._source} ({self.zone.key})"


class IntervalTimetable(Timetable):
    """Every `interval_seconds`, aligned to `anchor`: occurrences are anchor + k*interval for
    every integer k, negative ones included (there are occurrences before the anchor too).

    - A whole number of days (a multiple of 86400): occurrence k is the anchor's local date plus
      k*days, at the anchor's local wall-clock time in `zone`, so daily at 09:00 Europe/Berlin
      stays 09:00 across DST. On a day where that wall time does not exist it is moved forward
      by the gap (02:30 -> 03:30); where it occurs twice, the first occurrence is taken.
    - Anything else: exact elapsed time from the anchor (every 3600 s stays 3600 s apart in UTC
      across DST, so an hourly schedule fires 25 times on a fall-back day).

    The first occurrence after t is found by arithmetic, never by stepping from the anchor.
    Occurrences keep the anchor's seconds and microseconds.
    """

    kind = "interval"
    endless = True

    def __init__(self, spec: ScheduleSpec, zone: ZoneInfo, anchor: datetime) -> None:
        assert spec.interval_seconds is not None
        self.spec = spec
        self.zone = zone
        self.anchor = anchor
        self.interval_seconds = spec.interval_seconds
        self.wall_clock = self.interval_seconds % _DAY_SECONDS == 0
        self._step = timedelta(seconds=self.interval_seconds)
        self._anchor_utc = anchor.astimezone(UTC)
        local = anchor.astimezone(zone)
        self._anchor_date = local.date()
        self._anchor_time = local.time()  # naive, fold dropped
        self._days = self.interval_seconds // _DAY_SECONDS

    # occurrence k, and the first k whose occurrence is after t
    def _at(self, k: int) -> datetime:
        if not self.wall_clock:
            return self._anchor_utc + k * self._step
        day = self._anchor_date + timedelta(days=k * self._days)
        return _resolve_wall(datetime.combine(day, self._anchor_time), self.zone)

    def _first_index_after(self, t: datetime) -> int:
        if not self.wall_clock:
            return (t - self._anchor_utc) // self._step + 1
        elapsed_days = (t.astimezone(self.zone).date() - self._anchor_date).days
        k = elapsed_days // self._days - 1
        # A local date is within a day of its occurrence, so these loops take a step or two.
        while self._at(k) > t:
            k -= 1
        while self._at(k) <= t:
            k += 1
        return k

    def _iter_after(self, t: datetime) -> Iterator[datetime]:
        try:
            k = self._first_index_after(t)
            last = t
            while True:
                value = self._at(k)
                if value > last:  # a wall time can repeat after a skipped day (Pacific/Apia)
                    last = value
                    yield value
                k += 1
        except OverflowError:  # ran past year 9999
            return

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        t_utc = _as_utc(t, "t")
        try:
            return self._at(self._first_index_after(t_utc) - 1)
        except OverflowError:
            return None

    def describe(self) -> str:
        local = self.anchor.astimezone(self.zone)
        every = _format_seconds(self.interval_seconds)
        return f"every {every} from {_format_local(local)} ({self.zone.key})"


class RRuleTimetable(Timetable):
    """An RFC 5545 recurrence (RRULE, optional DTSTART, RDATE, EXDATE, EXRULE), expanded by
    dateutil on the wall clock of `zone`.

    DTSTART is a local wall time, so a weekly 09:00 rule stays 09:00 local across DST. A local
    time that does not exist is moved forward by the gap (02:30 -> 03:30); one that occurs twice
    takes its first occurrence. An expansion that lands twice on one instant fires once.

    DTSTART is the one in the text if any (naive: local time in the schedule's zone;
    `TZID=X`: local time in X, whose wall clock then governs; `...Z`: that instant, on the
    schedule's wall clock), else the anchor. As in dateutil (unlike RFC 5545), DTSTART is an
    occurrence only if it matches the rule; it always sets the time of day the rule does not
    give with BYHOUR/BYMINUTE/BYSECOND, and the start of COUNT and INTERVAL.

    COUNT and UNTIL make the schedule finite. dateutil expands a rule from its DTSTART, so each
    query first moves DTSTART forward by whole periods (the same occurrences from there on) to
    just before the time asked about; a rule with COUNT cannot be moved, and a query on it costs
    time proportional to its occurrences since DTSTART (one reason there is no MINUTELY or
    SECONDLY).
    """

    kind = "rrule"

    def __init__(
        self,
        spec: ScheduleSpec,
        zone: ZoneInfo,
        dtstart: datetime,
        rules: list[_Rule],
        exrules: list[_Rule],
        rdates: list[datetime],
        exdates: list[datetime],
        excluded_days: frozenset[date],
        summary: str,
    ) -> None:
        self.spec = spec
        self.zone = zone
        self.dtstart = dtstart  # aware, in `zone`: the wall time the expansion starts from
        self._parts = (rules, exrules, rdates, exdates)
        self._excluded_days = excluded_days
        self._summary = summary

    def _set(self, from_wall: datetime | None = None) -> rruleset:
        """The whole recurrence set (naive wall times); with `from_wall`, one that has the same
        occurrences from `from_wall` on but is quicker to expand there."""
        rules, exrules, rdates, exdates = self._parts
        result = rruleset()
        for part in rules:
            result.rrule(part.moved_to(from_wall))
        for part in exrules:
            result.exrule(part.moved_to(from_wall))
        for wall in rdates:
            result.rdate(wall)
        for wall in exdates:
            result.exdate(wall)
        return result

    def _walls(self, from_wall: datetime) -> Iterator[datetime]:
        for wall in self._set(from_wall).xafter(from_wall, inc=True):
            if wall.date() not in self._excluded_days:
                yield wall

    def _sorted_utc(self, walls: Iterator[datetime]) -> Iterator[datetime]:
        """Wall times (ascending) to UTC instants (ascending, without duplicates)."""
        pending: list[datetime] = []
        last: datetime | None = None
        for wall in walls:
            bound = _wall_lower_bound(wall, self.zone)
            while pending and pending[0] <= bound:
                value = heapq.heappop(pending)
                if last is None or value > last:
                    last = value
                    yield value
            heapq.heappush(pending, _resolve_wall(wall, self.zone))
        while pending:
            value = heapq.heappop(pending)
            if last is None or value > last:
                last = value
                yield value

    def _wall_of(self, t: datetime) -> datetime:
        return t.astimezone(self.zone).replace(tzinfo=None)

    def _iter_after(self, t: datetime) -> Iterator[datetime]:
        try:
            start = self._wall_of(t) - _WALL_SLACK
        except OverflowError:
            start = datetime.min
        for value in self._sorted_utc(self._walls(start)):
            if value > t:
                yield value

    def latest_at_or_before(self, t: datetime) -> datetime | None:
        t_utc = _as_utc(t, "t")
        try:
            cut = self._wall_of(t_utc) - _WALL_SLACK
        except OverflowError:
            cut = datetime.min
        while True:
            latest = None
            for value in self._sorted_utc(self._walls(cut)):
                if value > t_utc:
                    break
                latest = value
            if latest is not None:
                return latest
            # Nothing in the window: look further back, from the last wall time before it
            # (anything before that minus the slack is earlier still). Takes one more round.
            whole = self._set()
            previous = whole.before(cut)
            while previous is not None and previous.date() in self._excluded_days:
                previous = whole.before(previous)
            if previous is None:
                return None
            cut = previous - _WALL_SLACK

    def describe(self) -> str:
        return f"RRULE {self._summary} ({self.zone.key})"


# --- parsing ----------------------------------------------------------------------------------


def parse_schedule(spec: ScheduleSpec, *, field_prefix: str = "") -> Timetable:
    """Validate `spec` and return its `Timetable`.

    Raises `InvalidInput` whose `field` is `field_prefix` joined with the offending field (e.g.
    "schedules[0].cron"), or `field_prefix` itself (default "schedule") when the kinds are
    mixed up. An interval with no anchor uses `DEFAULT_INTERVAL_ANCHOR` in the zone; an RRULE
    with neither DTSTART nor anchor uses local midnight today, which changes from day to day:
    callers that store schedules should store `default_anchor(spec, now)` with them.
    """
    given = [
        name
        for name, value in (
            ("cron", spec.cron),
            ("interval_seconds", spec.interval_seconds),
            ("rrule", spec.rrule),
        )
        if value is not None
    ]
    if len(given) != 1:
        got = "none" if not given else " and ".join(given)
        raise InvalidInput(
            f"give exactly one of cron, interval_seconds or rrule (got {got})",
            field=field_prefix or "schedule",
        )
    zone = check_timezone(spec.timezone, field=_field(field_prefix, "timezone"))
    if spec.anchor is not None:
        anchor = spec.anchor
        if not isinstance(anchor, datetime) or anchor.tzinfo is None or anchor.utcoffset() is None:
            raise InvalidInput(
                "anchor must be a timezone-aware date and time, e.g. 2026-01-05T09:00:00+01:00",
                field=_field(field_prefix, "anchor"),
            )
        if not _MIN_ANCHOR <= anchor <= _MAX_ANCHOR:
            raise InvalidInput(
                f"anchor must be between years {_MIN_ANCHOR.year} and {_MAX_ANCHOR.year}, "
                f"got {anchor.isoformat()}",
                field=_field(field_prefix, "anchor"),
            )
    if spec.cron is not None:
        return CronTimetable(spec, zone, _parse_cron(spec.cron, zone, field_prefix))
    if spec.interval_seconds is not None:
        _check_interval(spec.interval_seconds, field_prefix)
        anchor = spec.anchor or DEFAULT_INTERVAL_ANCHOR.replace(tzinfo=zone)
        return IntervalTimetable(spec, zone, anchor)
    assert spec.rrule is not None
    return _parse_rrule(spec, zone, field_prefix)


def default_anchor(spec: ScheduleSpec, now: datetime, *, field_prefix: str = "") -> datetime | None:
    """The anchor a caller should store with `spec`, so the schedule never depends on when it
    is parsed: `spec.anchor` if given; for an interval, midnight 2020-01-01 in the zone; for an
    RRULE whose text has no DTSTART, local midnight of `now`'s date in the zone; otherwise (cron,
    or an RRULE with its own DTSTART) None."""
    if spec.anchor is not None:
        return spec.anchor
    zone = check_timezone(spec.timezone, field=_field(field_prefix, "timezone"))
    if spec.interval_seconds is not None:
        return DEFAULT_INTERVAL_ANCHOR.replace(tzinfo=zone)
    if isinstance(spec.rrule, str):
        lines = _rrule_lines(spec.rrule)
        if any(_split_property(line)[0] == "DTSTART" for line in lines):
            return None
        local_date = _as_utc(now, "now").astimezone(zone).date()
        return datetime.combine(local_date, time(), tzinfo=zone)
    return None


def _parse_cron(text: str, zone: ZoneInfo, prefix: str) -> str:
    field = _field(prefix, "cron")
    if not isinstance(text, str):
        raise InvalidInput(f"cron must be a string; {_CRON_FIELDS_HELP}", field=field)
    source = " ".join(text.split())
    if not source:
        raise InvalidInput(f"cron expression is empty; {_CRON_FIELDS_HELP}", field=field)
    if source.startswith("@"):
        expression = _CRON_MACROS.get(source.lower())
        if expression is None:
            reason = (
                "@reboot has no time to schedule"
                if source.lower() == "@reboot"
                else f"unknown cron macro {source!r}"
            )
            raise InvalidInput(f"{reason}; {_CRON_FIELDS_HELP}", field=field)
        return expression
    count = len(source.split())
    if count != 5:
        raise InvalidInput(
            f"cron expression {source!r} has {count} fields (seconds and years are not "
            f"supported); {_CRON_FIELDS_HELP}",
            field=field,
        )
    try:
        CronSim(source, datetime(2020, 1, 1, tzinfo=zone))
    except (CronSimError, ValueError, IndexError) as exc:
        raise InvalidInput(
            f"invalid cron expression {source!r}: {exc or 'not understood'}; {_CRON_FIELDS_HELP}",
            field=field,
        ) from None
    return source


def _check_interval(value: object, prefix: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not MIN_INTERVAL_SECONDS <= value <= MAX_INTERVAL_SECONDS
    ):
        raise InvalidInput(
            f"interval_seconds must be a whole number of seconds, at least "
            f"{MIN_INTERVAL_SECONDS} and at most {MAX_INTERVAL_SECONDS} (100 years); "
            f"got {value!r}",
            field=_field(prefix, "interval_seconds"),
        )


# RRULE text


def _rrule_lines(text: str) -> list[str]:
    """Content lines of RRULE text: unfolded (RFC 5545 3.1), stripped, blank lines dropped. A
    bare rule ("FREQ=...") becomes an RRULE line."""
    unfolded = re.sub(r"\r?\n[ \t]", "", text.strip())
    lines = [line.strip() for line in unfolded.splitlines() if line.strip()]
    if len(lines) == 1 and ":" not in lines[0]:
        lines = [f"RRULE:{lines[0]}"]
    return lines


def _split_property(line: str) -> tuple[str, dict[str, str], str]:
    """'DTSTART;TZID=X:20260105T090000' -> ('DTSTART', {'TZID': 'X'}, '20260105T090000')."""
    head, _, value = line.partition(":")
    name, *raw_params = head.split(";")
    params = {}
    for raw in raw_params:
        key, _, param_value = raw.partition("=")
        params[key.strip().upper()] = param_value.strip().strip('"')
    return name.strip().upper(), params, value.strip()


class _RRuleError(Exception):
    """A problem in RRULE text; parse_schedule turns it into InvalidInput."""


def _parse_ical_value(text: str, what: str) -> date | datetime:
    """A DATE (date), a local DATE-TIME (naive datetime) or a UTC one ('Z', aware in UTC)."""
    match = _ICAL_VALUE.match(text.strip().upper())
    if not match:
        raise _RRuleError(
            f"{what} {text!r} is not an RFC 5545 date or date-time such as 20260105 or "
            f"20260105T090000 or 20260105T140000Z"
        )
    year, month, day, hour, minute, second, utc = match.groups()
    if not _MIN_ANCHOR.year <= int(year) <= _MAX_ANCHOR.year:
        raise _RRuleError(
            f"{what} {text!r} is out of range: use a year from {_MIN_ANCHOR.year} to "
            f"{_MAX_ANCHOR.year}"
        )
    try:
        if hour is None:
            return date(int(year), int(month), int(day))
        value = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError as exc:
        raise _RRuleError(f"{what} {text!r}: {exc}") from None
    return value.replace(tzinfo=UTC) if utc else value


def _to_wall(
    value: date | datetime, params: dict[str, str], zone: ZoneInfo, what: str, field: str
) -> date | datetime:
    """A DATE stays a date; a DATE-TIME becomes a naive wall time in `zone` (from TZID's zone,
    from UTC, or as given if local)."""
    if params.get("VALUE", "").upper() == "PERIOD":
        raise _RRuleError(f"{what} periods (VALUE=PERIOD) are not supported; give date-times")
    if not isinstance(value, datetime):
        return value
    if "TZID" in params:
        if value.tzinfo is not None:
            raise _RRuleError(f"{what} has both TZID and a UTC 'Z' suffix; give one")
        source = check_timezone(params["TZID"], field=field)
        value = value.replace(tzinfo=source)
    if value.tzinfo is not None:
        return value.astimezone(zone).replace(tzinfo=None)
    return value


def _check_month_days(values: dict[str, str]) -> None:
    """Reject BYMONTHDAY values no BYMONTH month has (e.g. 30 in February): dateutil would
    search to year 9999 for them on every query."""
    if "BYMONTHDAY" not in values:
        return
    try:
        days = [int(day) for day in values["BYMONTHDAY"].split(",")]
        months = [int(month) for month in values.get("BYMONTH", "1").split(",")]
    except ValueError:
        return  # dateutil reports the syntax
    month_lengths = [29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31 for month in months]
    longest = max(month_lengths, default=31) if "BYMONTH" in values else 31
    if all(abs(day) > longest for day in days):
        raise _RRuleError(
            f"BYMONTHDAY={values['BYMONTHDAY']} never occurs"
            + (f" in BYMONTH={values['BYMONTH']}" if "BYMONTH" in values else "")
        )


@dataclass(frozen=True)
class _Rule:
    """One parsed RRULE or EXRULE over naive wall times, and what moving its DTSTART needs."""

    rule: rrule
    dtstart: datetime
    freq: str
    interval: int
    counted: bool

    def moved_to(self, wall: datetime | None) -> rrule:
        """This rule with DTSTART moved forward by a whole number of INTERVAL periods, to at
        most `wall`: the same occurrences from the new DTSTART on (the periods, the weekday,
        day of month and time of day DTSTART implies are all kept), but dateutil no longer
        expands everything since the original DTSTART. COUNT counts from the original DTSTART,
        and a day 29-31 does not exist in every month, so those rules stay as they are."""
        start = self.dtstart
        if wall is None or self.counted or wall <= start:
            return self.rule
        try:
            if self.freq in ("HOURLY", "DAILY", "WEEKLY"):
                hours = {"HOURLY": 1, "DAILY": 24, "WEEKLY": 24 * 7}[self.freq]
                step = timedelta(hours=hours * self.interval)
                moved = start + ((wall - start) // step) * step
            elif self.freq == "MONTHLY":
                if start.day > 28:
                    return self.rule
                months = (wall.year - start.year) * 12 + wall.month - start.month - 1
                months -= months % self.interval
                year, month = divmod(start.month - 1 + months, 12)
                moved = start.replace(year=start.year + year, month=month + 1)
            else:  # YEARLY
                if (start.month, start.day) == (2, 29):
                    return self.rule
                years = wall.year - start.year - 1
                moved = start.replace(year=start.year + years - years % self.interval)
        except (OverflowError, ValueError):
            return self.rule
        if moved <= start or moved > wall:
            return self.rule
        return self.rule.replace(dtstart=moved)


_WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")


def _check_reachable(freq: str, values: dict[str, str], interval: int, start: datetime) -> None:
    """Reject rule parts that make a rule fire never (or hardly ever) in ways dateutil cannot
    see: it would then expand period after period up to year 9999 on every query, which takes
    seconds for a daily or hourly rule. Parts RFC 5545 does not define for a FREQ go too."""
    only_for = {
        "BYSETPOS": ("WEEKLY", "MONTHLY", "YEARLY"),
        "BYYEARDAY": ("YEARLY",),
        "BYWEEKNO": ("YEARLY",),
        "BYMONTHDAY": ("DAILY", "HOURLY", "MONTHLY", "YEARLY"),
    }
    for part, freqs in only_for.items():
        if part in values and freq not in freqs:
            raise _RRuleError(f"{part} is supported with FREQ={' or '.join(freqs)}, not {freq}")
    weekdays: set[int] | None = None
    if "BYDAY" in values:
        weekdays = set()
        for item in values["BYDAY"].split(","):
            letters = item.split("(")[0].lstrip("+-0123456789")
            if letters != item.strip() and freq not in ("MONTHLY", "YEARLY"):
                raise _RRuleError(
                    f"BYDAY={values['BYDAY']}: a numbered weekday (like 1MO or -1FR) is "
                    f"supported with FREQ=MONTHLY or YEARLY"
                )
            if letters in _WEEKDAYS:
                weekdays.add(_WEEKDAYS.index(letters))
    try:
        hours = {int(hour) for hour in values["BYHOUR"].split(",")} if "BYHOUR" in values else None
        months = (
            {int(month) for month in values["BYMONTH"].split(",")} if "BYMONTH" in values else None
        )
    except ValueError:
        return  # dateutil has accepted it; nothing to add
    # Stepping INTERVAL periods from DTSTART reaches only some hours of the week (HOURLY),
    # weekdays (DAILY) or months (MONTHLY).
    if freq == "HOURLY" and (hours is not None or weekdays is not None):
        step = math.gcd(interval, 24 * 7)
        first = start.weekday() * 24 + start.hour
        reachable = any(
            (day * 24 + hour - first) % step == 0
            for day in (weekdays if weekdays is not None else range(7))
            for hour in (hours if hours is not None else range(24))
        )
    elif freq == "DAILY" and weekdays is not None:
        step = math.gcd(interval, 7)
        reachable = any((day - start.weekday()) % step == 0 for day in weekdays)
    elif freq == "MONTHLY" and months is not None:
        step = math.gcd(interval, 12)
        reachable = any((month - start.month) % step == 0 for month in months)
    else:
        return
    if not reachable:
        raise _RRuleError(
            f"FREQ={freq};INTERVAL={interval} starting {start:%a %Y-%m-%d %H:%M} never reaches "
            f"the BYHOUR/BYDAY/BYMONTH it asks for; change INTERVAL or the start"
        )


def _rule_value(value: str, dtstart: datetime, zone: ZoneInfo, name: str) -> _Rule:
    """One RRULE/EXRULE value ("FREQ=WEEKLY;BYDAY=MO") as a dateutil rule over naive wall
    times starting at `dtstart` (naive)."""
    parts = [part.strip() for part in value.strip().strip(";").split(";") if part.strip()]
    pairs: list[tuple[str, str]] = []
    for part in parts:
        key, sep, part_value = part.partition("=")
        if not sep:
            raise _RRuleError(f"{name} part {part!r} is not NAME=VALUE")
        pairs.append((key.strip().upper(), part_value.strip().upper()))
    keys = [key for key, _ in pairs]
    freqs = [part_value for key, part_value in pairs if key == "FREQ"]
    if len(freqs) != 1:
        raise _RRuleError(
            f"{name} needs exactly one FREQ: YEARLY, MONTHLY, WEEKLY, DAILY or HOURLY"
        )
    if freqs[0] in ("MINUTELY", "SECONDLY"):
        raise _RRuleError(
            f"FREQ={freqs[0]} is not supported: for schedules more frequent than hourly use "
            f"interval_seconds or cron (an RRULE is expanded from DTSTART on every query, so a "
            f"minutely rule gets slower as it ages)"
        )
    if freqs[0] not in _RRULE_FREQS:
        raise _RRuleError(
            f"unknown FREQ {freqs[0]!r}; use YEARLY, MONTHLY, WEEKLY, DAILY or HOURLY"
        )
    if "UNTIL" in keys and "COUNT" in keys:
        raise _RRuleError(f"{name} may have COUNT or UNTIL, not both")
    values = dict(pairs)
    # dateutil takes INTERVAL=0 and then repeats DTSTART forever.
    if "INTERVAL" in values and not (values["INTERVAL"].isdigit() and int(values["INTERVAL"]) >= 1):
        raise _RRuleError(f"INTERVAL must be a whole number >= 1, got {values['INTERVAL']!r}")
    _check_month_days(values)
    rendered = []
    for key, part_value in pairs:
        if key == "UNTIL":
            until = _parse_ical_value(part_value, "UNTIL")
            if isinstance(until, datetime):
                until_wall = _to_wall(until, {}, zone, "UNTIL", "")
            else:  # a date: the whole of that local day is included
                until_wall = datetime.combine(until, time(23, 59, 59))
            assert isinstance(until_wall, datetime)
            part_value = until_wall.strftime("%Y%m%dT%H%M%S")
        rendered.append(f"{key}={part_value}")
    interval = int(values.get("INTERVAL", "1"))
    try:
        rule = rrulestr(";".join(rendered), dtstart=dtstart)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        if "empty set" in str(exc):  # dateutil's own lattice check; say which part is at fault
            _check_reachable(freqs[0], values, interval, dtstart)
        raise _RRuleError(f"{name} {value!r} is not valid: {exc}") from None
    assert isinstance(rule, rrule)
    _check_reachable(freqs[0], values, interval, dtstart)
    return _Rule(rule, dtstart, freqs[0], interval, "COUNT" in keys)


def _parse_rrule(spec: ScheduleSpec, zone: ZoneInfo, prefix: str) -> RRuleTimetable:
    field = _field(prefix, "rrule")
    text = spec.rrule
    example = "e.g. FREQ=WEEKLY;BYDAY=MO,WE or RRULE:FREQ=MONTHLY;BYMONTHDAY=15,-1"
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"rrule must be RFC 5545 recurrence text, {example}", field=field)
    try:
        return _build_rrule(spec, text, zone, field)
    except _RRuleError as exc:
        raise InvalidInput(f"{exc} ({example})", field=field) from None


def _build_rrule(spec: ScheduleSpec, text: str, zone: ZoneInfo, field: str) -> RRuleTimetable:
    properties = [_split_property(line) for line in _rrule_lines(text)]
    known = {"DTSTART", "RRULE", "EXRULE", "RDATE", "EXDATE"}
    for name, _params, value in properties:
        if name not in known:
            raise _RRuleError(
                f"unsupported line {name!r}; the text may hold DTSTART, RRULE, RDATE, EXDATE "
                f"and EXRULE lines"
            )
        if not value:
            raise _RRuleError(f"{name} has no value")
    dtstarts = [(params, value) for name, params, value in properties if name == "DTSTART"]
    if len(dtstarts) > 1:
        raise _RRuleError("more than one DTSTART")
    if not any(name in ("RRULE", "RDATE") for name, _, _ in properties):
        raise _RRuleError("no RRULE (or RDATE) line")

    # DTSTART: the wall time the expansion starts from, and the zone whose clock it follows.
    if dtstarts:
        params, value = dtstarts[0]
        if params.get("VALUE", "").upper() == "PERIOD":
            raise _RRuleError("DTSTART cannot be a period")
        parsed = _parse_ical_value(value, "DTSTART")
        if "TZID" in params:
            if isinstance(parsed, datetime) and parsed.tzinfo is not None:
                raise _RRuleError("DTSTART has both TZID and a UTC 'Z' suffix; give one")
            zone = check_timezone(params["TZID"], field=field)
        if isinstance(parsed, datetime):
            start = parsed.astimezone(zone).replace(tzinfo=None) if parsed.tzinfo else parsed
        else:
            start = datetime.combine(parsed, time())
    else:
        anchor = spec.anchor or default_anchor(spec, datetime.now(UTC))
        assert anchor is not None
        start = anchor.astimezone(zone).replace(tzinfo=None)
    start = start.replace(microsecond=0)

    rules: list[_Rule] = []
    exrules: list[_Rule] = []
    rdates: list[datetime] = []
    exdates: list[datetime] = []
    excluded_days: set[date] = set()
    summary: list[str] = []
    for name, params, value in properties:
        if name == "RRULE":
            rules.append(_rule_value(value, start, zone, name))
            summary.append(value)
        elif name == "EXRULE":
            exrules.append(_rule_value(value, start, zone, name))
            summary.append(f"EXRULE:{value}")
        elif name in ("RDATE", "EXDATE"):
            for item in value.split(","):
                wall = _to_wall(_parse_ical_value(item, name), params, zone, name, field)
                if name == "RDATE":
                    if not isinstance(wall, datetime):  # a date: at DTSTART's time of day
                        wall = datetime.combine(wall, start.time())
                    rdates.append(wall)
                elif isinstance(wall, datetime):
                    exdates.append(wall)
                else:  # a date: no occurrence at all that local day
                    excluded_days.add(wall)
            summary.append(f"{name}:{value}")
        else:
            summary.append(f"DTSTART:{value}")
    return RRuleTimetable(
        spec,
        zone,
        start.replace(tzinfo=zone),
        rules,
        exrules,
        rdates,
        exdates,
        frozenset(excluded_days),
        " ".join(summary),
    )
