"""The process's log output: text (the default) or ``--log-format json``.

JSON is one object per line: ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg``,
``compute_id``, the ``request_id`` of the HTTP request being served (every line logged
while a request is handled, from any module, through the ``REQUEST_ID`` context variable
the HTTP layer sets), and ``exc`` (the traceback) when there is one. Both compute_ctl
(``cli``) and the operator sidecar set their logging up here, so their lines agree.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import sys
from typing import Literal

__all__ = ["FORMATS", "REQUEST_ID", "JsonFormatter", "setup"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "compute_ctl_request_id", default=None
)


class JsonFormatter(logging.Formatter):
    def __init__(self, *, compute_id: str) -> None:
        super().__init__()
        self.compute_id = compute_id

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, object] = {
            "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "compute_id": self.compute_id,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup(*, level: int | str, fmt: Literal["text", "json"] | str, compute_id: str) -> None:
    """Configure the root logger once: stderr, in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(compute_id=compute_id))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
