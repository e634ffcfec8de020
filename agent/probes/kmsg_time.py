"""The time and the kernel message of a kernel-log text line, in every common shape (pure).

A saved kernel log comes from ``dmesg`` (with its time options), from a syslog daemon's file or from
``journalctl -k``. ``TextLineParser.parse`` takes one such line and returns what it says: its
wall-clock time (``wall_ts``, epoch seconds) and/or its time since boot (``ts_us``), the priority
where the line names it, and the kernel message alone (the host name, the ``kernel:`` tag and any
inner ``[seconds.micros]`` removed, since handlers match on the message). Shapes:

* ``dmesg``: ``[   12.345678] msg``; ``-d`` ``[   12.345678 <    0.000012>] msg``; ``-T``/``--ctime``
  ``[Tue Dec  1 10:15:42 2026] msg``; ``-H``/``-e`` ``[Dec 1 10:15] msg`` then ``[  +0.000012] msg``
  relative to the line before; ``--time-format iso`` ``2026-12-01T10:15:42,123456+00:00 msg``;
  ``--time-format delta`` ``[<    0.000012>] msg`` (no time); ``-x``/``--decode`` puts
  ``kern  :err   : `` in front of any of these; ``-r`` puts ``<3>``; a ``[  T123]`` caller id after
  the time is dropped.
* syslog: RFC 3164 / rsyslog's traditional format ``Dec  1 10:15:42 host kernel: [  12.3] msg``;
  rsyslog's RFC 3339 format ``2026-12-01T10:15:42.123456+00:00 host kernel: msg``; RFC 5424
  ``<4>1 2026-12-01T10:15:42.123456Z host kernel - - - msg``.
* ``journalctl``: ``short`` ``Dec 01 10:15:42 host kernel: msg``, ``short-precise`` (micros),
  ``short-iso``/``short-iso-precise`` (``+0000`` offsets), ``short-full``
  ``Tue 2026-12-01 10:15:42 UTC host kernel: msg``, ``short-monotonic``
  ``[   12.345678] host kernel: msg``, ``short-unix`` ``1796120142.123456 host kernel: msg``.

Month names are read in English and in the abbreviations of glibc's de, fr, es, it, pt, nl, sv, pl
and ru locales (``Dez``, ``déc.``, ``dic``, ``Mär``, ``mai``...). ISO offsets are honoured; local
times without a zone are read in ``tz`` (``None``: the machine's local time). Shapes without a year
take the latest year that does not put the line more than a day after ``reference`` (the file's
modification time in a replay, now when following live), so a log that crosses New Year reads
December as the year before January. ``dmesg -H`` gives minutes only: its header lines count from
the start of their minute, the relative lines from the line before.

A line whose time cannot be read (an unknown month, 31 February) keeps its message without a time;
anything that is not one of these shapes (``[abc] x``) is a message as it stands. Never raises.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

__all__ = ["MONTHS", "ParsedLine", "TextLineParser", "month_number", "resolve_timezone"]

_ENGLISH: Final = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
#: Month abbreviations (lower case, without the trailing dot) → month number: English, and glibc's
#: ``abmon``/``ab_alt_mon`` of de_DE, fr_FR, es_ES, it_IT, pt_PT/pt_BR, nl_NL, sv_SE, pl_PL, ru_RU.
MONTHS: Final[dict[str, int]] = {
    **{m: i for i, m in enumerate(_ENGLISH, 1)},
    **{"mär": 3, "mrz": 3, "mai": 5, "okt": 10, "dez": 12},  # de
    **{"janv": 1, "févr": 2, "mars": 3, "avr": 4, "avril": 4, "juin": 6, "juil": 7, "août": 8},  # fr
    **{"sept": 9, "déc": 12},  # fr
    **{"ene": 1, "abr": 4, "ago": 8, "dic": 12},  # es (feb mar may jun jul sep oct nov as English)
    **{"gen": 1, "mag": 5, "giu": 6, "lug": 7, "set": 9, "ott": 10},  # it
    **{"fev": 2, "out": 10},  # pt
    **{"mrt": 3, "mei": 5},  # nl
    **{"maj": 5},  # sv, pl
    **{"sty": 1, "lut": 2, "kwi": 4, "cze": 6, "lip": 7, "sie": 8, "wrz": 9, "paź": 10},  # pl
    **{"lis": 11, "gru": 12},  # pl
    **{"янв": 1, "фев": 2, "мар": 3, "апр": 4, "мая": 5, "май": 5, "июн": 6, "июл": 7},  # ru
    **{"авг": 8, "сен": 9, "окт": 10, "ноя": 11, "дек": 12},  # ru
}
_LEVELS: Final = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
_FACILITIES: Final = frozenset(
    {"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp"}
    | {f"res{i}" for i in range(4)}
    | {f"local{i}" for i in range(8)}
)
#: A line without a year may be this far after the reference (clock skew, a wrong time zone).
_FUTURE_SLACK_S: Final = 86400.0
_WORD: Final = r"[^\W\d_]{2,5}\.?"  # a month or weekday name, any script, optional dot

_PRI: Final = re.compile(r"<(\d{1,3})>")
_DECODE: Final = re.compile(r"([a-z0-9]{3,8}) *:([a-z]{3,6}) *: ")
_MONO: Final = re.compile(r"\s*\[\s*(\d+)\.(\d{1,9})(?:\s+<\s*\d+\.\d+>)?\]\s?")
_DELTA_ONLY: Final = re.compile(r"\[<\s*\d+\.\d+>\]\s?")
_CTIME: Final = re.compile(
    rf"\[({_WORD}),? +(?:({_WORD}) +(\d{{1,2}})\.?|(\d{{1,2}})\.? +({_WORD})) +"
    r"(\d{1,2}):(\d{2}):(\d{2}) +(\d{4})(?:\s+<\s*\d+\.\d+>)?\]\s?"
)
_RELTIME: Final = re.compile(rf"\[({_WORD}) ?(\d{{1,2}}) (\d{{1,2}}):(\d{{2}})\]\s?")
_RELDELTA: Final = re.compile(r"\[ *\+(\d+)\.(\d{6})\]\s?")
_CALLER: Final = re.compile(r"\[ *[TC]\d{1,10}\]\s?")
_ISO: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:([.,])(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})? "
)
_BSD: Final = re.compile(rf"({_WORD}) +(\d{{1,2}}) (\d{{2}}):(\d{{2}}):(\d{{2}})(?:\.(\d{{1,9}}))? ")
_FULL: Final = re.compile(
    rf"{_WORD},? (\d{{4}})-(\d{{2}})-(\d{{2}}) (\d{{2}}):(\d{{2}}):(\d{{2}})(?:\.(\d{{1,9}}))? "
    r"([A-Za-z]{1,6}) "
)
_UNIX: Final = re.compile(r"(\d{9,11})\.(\d{6}) (?=\S+ kernel: )")
_RFC5424: Final = re.compile(r"1 (?=\d{4}-)")
_HOST_KERNEL: Final = re.compile(r"(\S+) kernel: ")
_HOST: Final = re.compile(r"(\S+) ")
_KERNEL_TAG: Final = re.compile(r"kernel: ")
_SD: Final = re.compile(r"(?:-|(?:\[[^\]]*\])+) ?")


class ParsedLine(msgspec.Struct, frozen=True, kw_only=True):
    """What one text line says: ``None`` where it does not say it."""

    message: str
    wall_ts: float | None = None
    ts_us: int | None = None
    priority: int | None = None


def resolve_timezone(name: str) -> tzinfo | None:
    """``""``: ``None`` (the machine's local time); ``UTC`` or an IANA name (``Europe/Berlin``);
    ``ValueError`` for a name this machine's zone database does not know."""
    if not name:
        return None
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def month_number(token: str) -> int | None:
    """The month an abbreviation names (``Dez``, ``déc.``, ``Mär``, ``мая``), or ``None``."""
    word = token.rstrip(".").lower()
    found = MONTHS.get(word)
    if found is None:
        found = _PLAIN_MONTHS.get(_plain(word))
    return found


def _plain(word: str) -> str:
    """Without accents: ``déc`` → ``dec``, ``paź`` → ``paz`` (a log re-encoded to ASCII)."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


_PLAIN_MONTHS: Final[dict[str, int]] = {_plain(k): v for k, v in MONTHS.items()}


def _micros(frac: str | None) -> int:
    return int(frac[:6].ljust(6, "0")) if frac else 0


def _offset(text: str | None) -> tzinfo | None:
    if text is None:
        return None
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def _epoch(fields: tuple[int, int, int, int, int, int, int], tz: tzinfo | None) -> float | None:
    """Epoch seconds of a calendar time in ``tz`` (``None``: local time); ``None`` if invalid."""
    try:
        return datetime(*fields, tzinfo=tz).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


class TextLineParser:
    """Parses text lines one after the other (``dmesg -H`` relative lines need the line before).

    ``reference`` is the time yearless lines are read against (``None``: ``clock()`` at each
    line); ``tz`` the zone of local times without an offset (``None``: the machine's).
    """

    def __init__(
        self,
        *,
        reference: float | None = None,
        tz: tzinfo | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reference = reference
        self.tz = tz
        self._clock = clock
        self._last_wall: float | None = None

    def parse(self, line: str) -> ParsedLine | None:
        """The line's time and message; ``None`` for a blank line. Never raises."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return None
        try:
            parsed = self._parse(line)
        except (ValueError, OverflowError):  # a value no shape anticipated: the line as it is
            parsed = ParsedLine(message=line)
        if parsed.wall_ts is not None:
            self._last_wall = parsed.wall_ts
        return parsed

    # -- shapes ---------------------------------------------------------------------------------------

    def _parse(self, line: str) -> ParsedLine:
        rest, priority = line, None
        pri = _PRI.match(rest)
        if pri is not None and int(pri.group(1)) <= 191:
            priority, rest = int(pri.group(1)) & 7, rest[pri.end() :]
            five = _RFC5424.match(rest)
            if five is not None:
                return self._iso_host(rest[five.end() :], priority, rfc5424=True) or ParsedLine(
                    message=line, priority=priority
                )
        decode = _DECODE.match(rest)
        if decode is not None and decode.group(1) in _FACILITIES and decode.group(2) in _LEVELS:
            priority, rest = _LEVELS.index(decode.group(2)), rest[decode.end() :]
        for shape in (self._bracket, self._iso_host, self._bsd, self._full, self._unix):
            found = shape(rest, priority)
            if found is not None:
                return found
        return ParsedLine(message=rest, priority=priority)

    def _bracket(self, rest: str, priority: int | None) -> ParsedLine | None:
        """dmesg's bracketed times, and journalctl's short-monotonic."""
        if not rest.lstrip().startswith("["):
            return None
        m = _MONO.match(rest)
        if m is not None:
            ts_us = int(m.group(1)) * 1_000_000 + _micros(m.group(2))
            message = _drop_caller(rest[m.end() :])
            host = _HOST_KERNEL.match(message)  # journalctl -o short-monotonic
            if host is not None:
                message = message[host.end() :]
            return ParsedLine(message=message, ts_us=ts_us, priority=priority)
        m = _CTIME.match(rest)
        if m is not None:
            month = m.group(2) or m.group(5)
            day = m.group(3) or m.group(4)
            wall = self._calendar(month, day, m.group(6), m.group(7), m.group(8), None, year=m.group(9))
            return ParsedLine(message=_drop_caller(rest[m.end() :]), wall_ts=wall, priority=priority)
        m = _RELTIME.match(rest)
        if m is not None:
            wall = self._calendar(m.group(1), m.group(2), m.group(3), m.group(4), "0", None)
            return ParsedLine(message=_drop_caller(rest[m.end() :]), wall_ts=wall, priority=priority)
        m = _RELDELTA.match(rest)
        if m is not None:
            last = self._last_wall
            wall = last + int(m.group(1)) + int(m.group(2)) / 1e6 if last is not None else None
            return ParsedLine(message=_drop_caller(rest[m.end() :]), wall_ts=wall, priority=priority)
        m = _DELTA_ONLY.match(rest)
        if m is not None:
            return ParsedLine(message=_drop_caller(rest[m.end() :]), priority=priority)
        return None

    def _iso_host(self, rest: str, priority: int | None, *, rfc5424: bool = False) -> ParsedLine | None:
        """``dmesg --time-format iso`` (a comma before the fraction: the message follows) and the
        syslog/journal ISO forms (a host name follows)."""
        m = _ISO.match(rest)
        if m is None:
            return None
        year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
        zone = _offset(m.group(9)) or self.tz
        wall = _epoch((year, month, day, hour, minute, second, _micros(m.group(8))), zone)
        body = rest[m.end() :]
        if m.group(7) == "," and not rfc5424:
            return ParsedLine(message=_drop_caller(body), wall_ts=wall, priority=priority)
        message, ts_us = _after_host(body, rfc5424=rfc5424)
        return ParsedLine(message=message, wall_ts=wall, ts_us=ts_us, priority=priority)

    def _bsd(self, rest: str, priority: int | None) -> ParsedLine | None:
        """RFC 3164 / rsyslog traditional, journalctl short and short-precise: no year."""
        m = _BSD.match(rest)
        if m is None:
            return None
        wall = self._calendar(m.group(1), m.group(2), m.group(3), m.group(4), m.group(5), m.group(6))
        message, ts_us = _after_host(rest[m.end() :])
        return ParsedLine(message=message, wall_ts=wall, ts_us=ts_us, priority=priority)

    def _full(self, rest: str, priority: int | None) -> ParsedLine | None:
        """journalctl short-full: ``Tue 2026-12-01 10:15:42 UTC host kernel: msg``."""
        m = _FULL.match(rest)
        if m is None:
            return None
        zone_name = m.group(8).upper()
        zone = UTC if zone_name in ("UTC", "GMT", "Z") else self.tz
        y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
        wall = _epoch((y, mo, d, h, mi, s, _micros(m.group(7))), zone)
        message, ts_us = _after_host(rest[m.end() :])
        return ParsedLine(message=message, wall_ts=wall, ts_us=ts_us, priority=priority)

    def _unix(self, rest: str, priority: int | None) -> ParsedLine | None:
        """journalctl short-unix: ``1796120142.123456 host kernel: msg``."""
        m = _UNIX.match(rest)
        if m is None:
            return None
        wall = int(m.group(1)) + int(m.group(2)) / 1e6
        message, ts_us = _after_host(rest[m.end() :])
        return ParsedLine(message=message, wall_ts=wall, ts_us=ts_us, priority=priority)

    # -- calendar -------------------------------------------------------------------------------------

    def _calendar(
        self, month: str, day: str, hour: str, minute: str, second: str, frac: str | None, *, year: str = ""
    ) -> float | None:
        number = month_number(month)
        if number is None:
            return None
        fields = (int(day), int(hour), int(minute), int(second), _micros(frac))
        if year:
            return _epoch((int(year), number, *fields), self.tz)
        reference = self.reference if self.reference is not None else self._clock()
        ref_year = datetime.fromtimestamp(reference, self.tz).year
        for candidate in range(ref_year + 1, ref_year - 5, -1):  # -5: back to a leap year's 29 Feb
            wall = _epoch((candidate, number, *fields), self.tz)
            if wall is not None and wall <= reference + _FUTURE_SLACK_S:
                return wall
        return None


def _drop_caller(message: str) -> str:
    """Without a ``[  T123]``/``[C2]`` caller id (kernels built with ``CONFIG_PRINTK_CALLER``)."""
    m = _CALLER.match(message)
    return message[m.end() :] if m is not None else message


def _after_host(body: str, *, rfc5424: bool = False) -> tuple[str, int | None]:
    """The message after a syslog/journal host name, without the ``kernel:`` tag and the inner
    ``[seconds.micros]`` it may repeat; other tags stay (``systemd[1]: ...``)."""
    host = _HOST.match(body)
    if host is not None and not host.group(1).endswith(":"):
        body = body[host.end() :]
    if rfc5424:  # APP-NAME PROCID MSGID STRUCTURED-DATA MSG
        parts = body.split(" ", 3)
        if len(parts) == 4:
            app, sd_and_msg = parts[0], parts[3]
            sd = _SD.match(sd_and_msg)
            body = sd_and_msg[sd.end() :] if sd is not None else sd_and_msg
            body = body.removeprefix("\ufeff")
            if app != "kernel":
                return f"{app}: {body}", None
            return _inner_mono(body)
        return body, None
    tag = _KERNEL_TAG.match(body)
    if tag is None:
        return body, None
    return _inner_mono(body[tag.end() :])


def _inner_mono(message: str) -> tuple[str, int | None]:
    m = _MONO.match(message)
    if m is None:
        return message, None
    return _drop_caller(message[m.end() :]), int(m.group(1)) * 1_000_000 + _micros(m.group(2))
