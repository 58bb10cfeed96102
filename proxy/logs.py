"""Structured logging: ``key=value`` text by default, one JSON object per line optionally."""

from __future__ import annotations

import json
import logging
import sys
import time

log = logging.getLogger("pgwitness")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        extra = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in fields.items())
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname.lower()} {record.getMessage()}"
        text = f"{base} {extra}" if extra else base
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger("pgwitness")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # sqlglot warns for each statement it parses as a bare Command (the policy refuses or
    # reads those with PostgreSQL's parser): not the operator's business, and it would
    # reach stderr unformatted (a bare line in a JSON log). Its errors, formatted.
    parser_log = logging.getLogger("sqlglot")
    parser_log.handlers[:] = [handler]
    parser_log.setLevel(logging.ERROR)
    parser_log.propagate = False


def event(msg: str, level: int = logging.INFO, **fields) -> None:
    if log.isEnabledFor(level):
        log.log(level, msg, extra={"fields": fields})
