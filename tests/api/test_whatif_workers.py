"""What-ifs across workers when the worker running one is lost: heartbeats, the staleness
rule every worker applies to a published run, and the owner's lease (``api.whatif``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx

from api.whatif import (
    HEARTBEAT_S,
    STALE_HEARTBEATS,
    WhatIfRun,
    WhatIfRunner,
    judged,
    lost_error,
    stale_after,
)
from tests.api.conftest import Server, start_serve_process, stop_process
from tests.api.test_whatif import OPS
from tests.conftest import RedisServer
from tracking.errors import Unavailable
from tracking.events import Event
from tracking.redis_store import RedisStore
from tracking.store import MemoryStore

T0 = 1_700_000_000.0
RESULT = {
    "kpis": {"baseline": {"orders": 20}, "variant": {"orders": 20}},
    "reports": {"baseline": "<html>b</html>", "variant": "<html>v</html>"},
    "orders": 20,
}


class Wall:
    """A wall clock the test moves."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FlakyStore(MemoryStore):
    """A memory store whose document writes fail while ``down`` (Redis unreachable)."""

    down = False

    async def put_doc(
        self, name: str, doc: Mapping[str, Any], *, events: Sequence[Event] = ()
    ) -> None:
        if self.down:
            raise Unavailable("unavailable", "the store is down")
        await super().put_doc(name, doc, events=events)


def record(run_id: str = "w-1") -> WhatIfRun:
    return WhatIfRun(
        id=run_id,
        scenario="default_city",
        policy={"baseline": "live", "variant": "live"},
        settings={"baseline": {}, "variant": {}},
        couriers_scale=1.0,
        scale=0.01,
        orders=20,
        couriers=3,
        created_at=T0,
        notes=[],
    )


# -- the rule: a pure function of the published view and the time --------------------------


def test_a_stale_heartbeat_reads_as_failed_and_a_fresh_one_as_running() -> None:
    view = {**record().view(), "heartbeat_at": T0, "heartbeat_s": 2.0}
    bound = stale_after(2.0)
    assert bound == STALE_HEARTBEATS * 2.0
    assert judged(view, T0)["status"] == "running"
    assert judged(view, T0 + bound) == view  # at the bound: still running
    lost = judged(view, T0 + bound + 0.01)
    assert lost["status"] == "failed"
    assert lost["error"] == lost_error(2.0) and lost["error"].startswith("worker lost")
    assert lost["finished_at"] == T0  # its last sign of life: the same from every reader
    assert lost["report_url"] is None and lost["kpis"] is None
    assert {k: v for k, v in lost.items() if k not in ("status", "error", "finished_at")} == {
        k: v for k, v in view.items() if k not in ("status", "error", "finished_at")
    }
    # the owner's interval counts, not the reader's own
    assert judged(view, T0 + bound - 1, heartbeat_s=0.1)["status"] == "running"
    # a view published before heartbeats existed: silent since it was created
    old = {k: v for k, v in view.items() if k not in ("heartbeat_at", "heartbeat_s")}
    assert judged(old, T0 + 1)["status"] == "running"
    assert judged(old, T0 + stale_after(HEARTBEAT_S) + 1)["error"] == lost_error(HEARTBEAT_S)
    # a finished run is never judged
    for status in ("done", "failed"):
        assert judged({**view, "status": status}, T0 + 10**6)["status"] == status


def test_a_reader_reports_a_silent_run_failed_in_lookup_and_listing() -> None:
    """Another worker's run, published in the store: running while its heartbeat is fresh,
    failed (worker lost) once it is stale, and the listing says the same as the lookup."""

    async def main() -> None:
        store, wall = MemoryStore(), Wall()
        reader = WhatIfRunner(store=store, wall=wall, shared=True)
        view = {**record().view(), "heartbeat_at": T0, "heartbeat_s": 1.0}
        await store.put_doc("whatif:w-1", view)
        await store.put_doc("whatif:index", {"ids": ["w-1"]})
        wall.t = T0 + stale_after(1.0) - 0.5
        assert (await reader.lookup("w-1"))["status"] == "running"
        assert [r["status"] for r in await reader.listing()] == ["running"]
        wall.t = T0 + stale_after(1.0) + 0.5
        got = await reader.lookup("w-1")
        assert got["status"] == "failed" and got["error"] == lost_error(1.0)
        assert await reader.listing() == [got]
        assert await store.get_doc("whatif:w-1") == view  # readers never write

    asyncio.run(main())


# -- the owner: heartbeats and its lease ------------------------------------------------------


async def settle(seconds: float) -> None:
    """Real time for the heartbeat loop (the wall clock stays the test's)."""
    await asyncio.sleep(seconds)


def test_the_owner_heartbeats_while_running_and_stops_once_done() -> None:
    async def main() -> None:
        store, wall = MemoryStore(), Wall()
        owner = WhatIfRunner(store=store, heartbeat_s=0.05, wall=wall, shared=True)
        run, future = record(), Future[dict[str, Any]]()
        owner.track(run, future)
        await owner.publish(run, new=True)
        doc = await store.get_doc("whatif:w-1")
        assert doc is not None
        assert doc["heartbeat_at"] == T0 and doc["heartbeat_s"] == 0.05
        for step in range(1, 4):  # within the lease each time: every beat renews it
            wall.t = T0 + step * 0.1
            await settle(0.15)
            doc = await store.get_doc("whatif:w-1")
            assert doc is not None and doc["status"] == "running"
            assert doc["heartbeat_at"] == wall.t
            assert (await owner.lookup("w-1"))["heartbeat_at"] == wall.t
        future.set_result(RESULT)
        await settle(0.05)
        assert (await owner.lookup("w-1"))["status"] == "done"
        doc = await store.get_doc("whatif:w-1")
        assert doc is not None and doc["status"] == "done"
        assert await store.get_doc("whatif:w-1:reports") == RESULT["reports"]
        await settle(0.15)  # no more beats: the loop ended with the last running run
        assert owner._beating is not None and owner._beating.done()

    asyncio.run(main())


def test_an_owner_cut_off_from_the_store_gives_its_run_up_as_the_others_see_it() -> None:
    """The owner's heartbeats stop landing (the store is down for it): past its lease it
    reports the run failed with the same error the other workers read from the stale view,
    and a result that comes afterwards does not turn it done."""

    async def main() -> None:
        store, wall = FlakyStore(), Wall()
        owner = WhatIfRunner(store=store, heartbeat_s=0.05, wall=wall, shared=True)
        reader = WhatIfRunner(store=store, wall=wall, shared=True)
        run, future = record(), Future[dict[str, Any]]()
        assert future.set_running_or_notify_cancel()  # the pool took it: cannot be cancelled
        owner.track(run, future)
        await owner.publish(run, new=True)
        store.down = True
        wall.t = T0 + owner.lease_s - 0.01
        await settle(0.1)
        assert (await owner.lookup("w-1"))["status"] == "running"  # lease still holds
        wall.t = T0 + owner.lease_s + 0.01
        mine = await owner.lookup("w-1")
        assert mine["status"] == "failed" and mine["error"] == lost_error(0.05)
        assert (await reader.lookup("w-1"))["status"] == "running"  # not judged yet
        wall.t = T0 + stale_after(0.05) + 0.01
        theirs = await reader.lookup("w-1")
        assert {k: theirs[k] for k in ("status", "error", "finished_at")} == {
            k: mine[k] for k in ("status", "error", "finished_at")
        }
        store.down = False
        future.set_result(RESULT)  # too late: dropped
        await settle(0.1)
        assert (await owner.lookup("w-1"))["status"] == "failed"
        doc = await store.get_doc("whatif:w-1")
        assert doc is not None and doc["status"] == "failed" and doc["error"] == mine["error"]
        assert (await reader.lookup("w-1"))["status"] == "failed"

    asyncio.run(main())


def test_a_shared_owner_shows_done_only_once_published() -> None:
    async def main() -> None:
        store, wall = FlakyStore(), Wall()
        owner = WhatIfRunner(store=store, heartbeat_s=0.05, wall=wall, shared=True)
        run, future = record(), Future[dict[str, Any]]()
        owner.track(run, future)
        await owner.publish(run, new=True)
        store.down = True
        future.set_result(RESULT)
        await settle(0.1)
        assert (await owner.lookup("w-1"))["status"] == "running"  # the others read running
        store.down = False
        await settle(0.1)  # the next heartbeat publishes the answer
        assert (await owner.lookup("w-1"))["status"] == "done"
        doc = await store.get_doc("whatif:w-1")
        assert doc is not None and doc["status"] == "done"

    asyncio.run(main())


def test_memory_store_heartbeats_but_never_gives_a_run_up() -> None:
    """One process: its runs are answered from memory, so only the heartbeat is new."""

    async def main() -> None:
        store, wall = MemoryStore(), Wall()
        owner = WhatIfRunner(store=store, heartbeat_s=0.05, wall=wall)
        assert not owner.shared
        run, future = record(), Future[dict[str, Any]]()
        owner.track(run, future)
        await owner.publish(run, new=True)
        wall.t = T0 + 1000.0  # far past any lease
        await settle(0.1)
        doc = await store.get_doc("whatif:w-1")
        assert doc is not None and doc["heartbeat_at"] == wall.t
        assert (await owner.lookup("w-1"))["status"] == "running"
        future.set_result(RESULT)
        assert (await owner.lookup("w-1"))["status"] == "done"  # at once, as before

    asyncio.run(main())


# -- real workers: one killed mid-run ----------------------------------------------------------

BEAT_S = 1.0
"""Heartbeat of the servers below (stale after STALE_HEARTBEATS of them: 4 s)."""


def poll(
    client: httpx.Client, path: str, until: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(path)
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        if until(doc):
            return doc
        assert time.monotonic() < deadline, f"{path} after {timeout} s: {doc}"
        time.sleep(0.1)


def test_a_run_of_a_killed_worker_reads_failed_on_the_other_worker(
    tmp_path: Path, server_factory: Callable[..., Server], redis_server: RedisServer
) -> None:
    """Two workers on one Redis; the one running a what-if is SIGKILLed mid-run (with its
    simulation process). The other reports the run running while its owner lives, and
    failed (worker lost) within the staleness bound once it is gone, in the lookup and the
    listing alike, instead of running forever."""
    env = {"O2O_WHATIF_HEARTBEAT_S": str(BEAT_S)}
    a = start_serve_process(tmp_path, "--store", redis_server.url, "--no-dispatch", env=env)
    assert a.proc is not None
    try:
        b = server_factory(
            store=RedisStore.from_url(redis_server.url), dispatch=False, whatif_heartbeat_s=BEAT_S
        )
        with a.client(OPS) as ca, b.client(OPS) as cb:
            r = ca.post("/v1/whatif", json={"scale": 0.1})  # tens of seconds
            assert r.status_code == 202, r.text
            wid = r.json()["id"]
            path = f"/v1/whatif/{wid}"
            # alive: its heartbeats keep it running on b, past the staleness bound
            alive_until = time.monotonic() + stale_after(BEAT_S) + BEAT_S
            while True:
                seen = cb.get(path).json()
                assert seen["status"] == "running", seen
                if time.monotonic() > alive_until:
                    break
                time.sleep(0.2)

            os.killpg(a.proc.pid, signal.SIGKILL)  # the worker and its simulation process
            a.proc.wait(timeout=10)
            killed = time.monotonic()
            lost = poll(cb, path, lambda d: d["status"] != "running", timeout=20)
            waited = time.monotonic() - killed
            assert lost["status"] == "failed", lost
            assert lost["error"] == lost_error(BEAT_S) and "worker" in lost["error"]
            assert lost["finished_at"] >= seen["heartbeat_at"] > r.json()["heartbeat_at"]
            assert lost["heartbeat_s"] == BEAT_S
            assert lost["kpis"] is None and lost["report_url"] is None
            assert waited <= (STALE_HEARTBEATS + 2) * BEAT_S, waited
            listed = {run["id"]: run for run in cb.get("/v1/whatif").json()["runs"]}
            assert listed[wid] == lost
            report = cb.get(f"{path}/report")
            assert report.status_code == 409 and report.json()["reason"] == "whatif_failed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(a.proc.pid, signal.SIGKILL)
        stop_process(a.proc)
