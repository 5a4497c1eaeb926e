"""Structured logs: one line per event, ``key=value`` text or JSON (``--log-format json``).

Every line has ``ts`` (RFC 3339, UTC), ``level`` and ``event``; the rest are the event's
fields. Lines are written whole under a lock, so threads never interleave them.
"""
from __future__ import annotations

import datetime as _dt
import json
import sys
import threading
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class EventLog:
    def __init__(self, stream: TextIO | None = None, fmt: str = "text",
                 level: str = "info") -> None:
        if fmt not in ("text", "json"):
            raise ValueError("log format must be 'text' or 'json'")
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
        self.stream = stream or sys.stderr
        self.fmt = fmt
        self.level = LEVELS[level]
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def event(self, event: str, level: str = "info", **fields: Any) -> None:
        with self._lock:
            self.counts[level] = self.counts.get(level, 0) + 1
        if LEVELS[level] < self.level:
            return
        ts = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        ts = ts.replace("+00:00", "Z")
        if self.fmt == "json":
            line = json.dumps({"ts": ts, "level": level, "event": event, **fields},
                              default=str)
        else:
            parts = [ts, level.upper(), event]
            for k, v in fields.items():
                s = str(v)
                if not s or any(c in s for c in ' "=\n'):
                    s = json.dumps(s)
                parts.append(f"{k}={s}")
            line = " ".join(parts)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def info(self, event: str, **f: Any) -> None:
        self.event(event, "info", **f)

    def warning(self, event: str, **f: Any) -> None:
        self.event(event, "warning", **f)

    def error(self, event: str, **f: Any) -> None:
        self.event(event, "error", **f)

    def debug(self, event: str, **f: Any) -> None:
        self.event(event, "debug", **f)
