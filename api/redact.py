"""Keep bearer tokens out of the server's logs.

Browsers cannot set headers on a websocket, so tokens travel as ``?token=`` (share
links too), and uvicorn logs every websocket accept and every request with its query
string. Anyone who can read the logs could then track a customer's delivery or act as
a courier until the token expires. :class:`TokenRedactor` rewrites ``token=...`` in
uvicorn's log records; ``install`` puts it on uvicorn's loggers in each worker.
"""

from __future__ import annotations

import logging
import re

__all__ = ["TokenRedactor", "install"]

_TOKEN = re.compile(r"((?:^|[?&])(?:token|access_token)=)[^&\s\"']+", re.IGNORECASE)
LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


class TokenRedactor(logging.Filter):
    """Replaces token values in a record's message and string arguments; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg.lower():
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, str) and "=" in a for a in args):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        return True


def install() -> None:
    """Add the redactor to uvicorn's loggers (once, however often it is called)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactor) for f in logger.filters):
            logger.addFilter(TokenRedactor())
