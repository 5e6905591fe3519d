"""A courier's fused position when posts may land on any of several workers."""

from __future__ import annotations

from tests.tracking.conftest import MakeStore, make_memory, run
from tracking import StateStore
from tracking.live import Live

T0 = 1_000_000.0


def _fix(t: float, lat: float, lon: float = 13.40) -> dict[str, object]:
    return {"t": t, "kind": "gps", "lat": lat, "lon": lon, "accuracy": 5.0}


def _count_reads(store: StateStore) -> list[str]:
    """Record every get_position on this (real) store."""
    reads: list[str] = []
    real = store.get_position

    async def counted(courier_id: str):  # type: ignore[no-untyped-def]
        reads.append(courier_id)
        return await real(courier_id)

    store.get_position = counted  # type: ignore[method-assign]
    return reads


def _two_workers(make_store: MakeStore) -> tuple[StateStore, StateStore, Live, Live]:
    """Two workers' stores (one shared object for memory) and their Live, one clock."""
    store_a = make_store()
    store_b = store_a if make_store is make_memory else make_store()
    now = T0 + 100.0
    return store_a, store_b, Live(store_a, clock=lambda: now), Live(store_b, clock=lambda: now)


async def _close(store_a: StateStore, store_b: StateStore) -> None:
    await store_a.aclose()
    if store_b is not store_a:
        await store_b.aclose()


def test_a_worker_reads_the_stored_position_only_when_another_wrote(
    make_store: MakeStore,
) -> None:
    """Worker A's own writes tell it (by what they replaced) that its filter still holds
    the stored state, so its steady 1 Hz posts need no read; once worker B has written
    in between, A reads the store again before its next fix."""

    async def main() -> None:
        store_a, store_b, a, b = _two_workers(make_store)
        reads = _count_reads(store_a)
        for i in range(8):  # 1.5 s apart: a gap the old 1 s shortcut did not cover
            await a.post_observations("c1", [_fix(T0 + 1.5 * i, 52.5200 + 1e-5 * i)])
        assert reads == ["c1"]  # only the first post (nothing known yet)

        written = await b.post_observations("c1", [_fix(T0 + 12.0, 52.52008)])
        assert written.position is not None
        reads.clear()  # (B's first post read the store too where they share one object)
        for i, expect in ((9, 0), (10, 1), (11, 1)):
            got = await a.post_observations("c1", [_fix(T0 + 1.5 * i, 52.5200 + 1e-5 * i)])
            assert got.position is not None and got.position.t == T0 + 1.5 * i
            # the first write finds B's in place, so the next post reads the store first
            assert reads == ["c1"] * expect
        stored = await store_a.get_position("c1")
        assert stored.t == T0 + 16.5
        await _close(store_a, store_b)

    run(main())


def test_a_worker_with_no_state_starts_from_the_stored_position(make_store: MakeStore) -> None:
    async def main() -> None:
        store_a, store_b, a, b = _two_workers(make_store)
        for i in range(5):
            await a.post_observations("c1", [_fix(T0 + i, 52.5200)])
        # B's first fix is 50 m off and less precise: fused with A's stored position
        # rather than taken alone
        got = await b.post_observations("c1", [{**_fix(T0 + 5.0, 52.5204), "accuracy": 20.0}])
        assert got.position is not None
        assert 52.5200 < got.position.lat < 52.5204 - 1e-5
        await _close(store_a, store_b)

    run(main())
