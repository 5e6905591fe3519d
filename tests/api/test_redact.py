"""Tokens passed as ``?token=`` (websockets, share links) never reach the logs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from api.redact import TokenRedactor, redact
from tests.api.conftest import start_serve_process, stop_process, token


def test_redact_keeps_everything_but_the_token() -> None:
    path = "/v1/orders/o-1/track?token=eyJ.abc.def&last_event_id=1-0"
    assert redact(path) == "/v1/orders/o-1/track?token=[redacted]&last_event_id=1-0"
    assert redact("/x?last=1&access_token=abc") == "/x?last=1&access_token=[redacted]"
    assert redact("/x?mytoken=abc") == "/x?mytoken=abc"  # not a token parameter
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        "",
        0,
        '%s - "WebSocket %s" [accepted]',
        (("127.0.0.1", 5), path),
        None,
    )
    assert TokenRedactor().filter(record)
    assert "eyJ" not in record.getMessage() and "[redacted]" in record.getMessage()


def test_the_service_logs_no_token(tmp_path: Path) -> None:
    srv = start_serve_process(tmp_path, "--no-dispatch", "--log-level", "info")
    ops = token("ops", "ops-redact")
    try:
        with httpx.Client(base_url=srv.url) as c:
            assert c.get(f"/v1/fleet?token={ops}").status_code == 401  # headers only on REST

        async def watch() -> None:
            async with connect(f"{srv.ws}/v1/ops/live?token={ops}") as ws:
                await asyncio.wait_for(ws.recv(), 10)

        asyncio.run(watch())
    finally:
        assert srv.proc is not None and srv.log is not None
        stop_process(srv.proc)
    text = srv.log.read_text()
    assert "WebSocket /v1/ops/live?token=[redacted]" in text, text[-2000:]
    assert "/v1/fleet?token=[redacted]" in text, text[-2000:]
    assert ops not in text and ops.split(".")[2] not in text
