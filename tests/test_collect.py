"""fewer_collections tunes the collector for a block and gives it back as it was."""

from __future__ import annotations

import gc
import threading

from ebpfwire.collect import fewer_collections


def test_the_outermost_block_tunes_and_restores() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold() == (10_000, 10, 10)
        assert gc.get_freeze_count() > 0
        with fewer_collections():
            assert gc.get_threshold() == (10_000, 10, 10)
        assert gc.get_threshold() == (10_000, 10, 10)    # the inner end changes nothing
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_blocks_of_two_threads_ending_in_either_order_restore() -> None:
    before = gc.get_threshold()
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with fewer_collections():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other)
    with fewer_collections():
        thread.start()
        inside.wait(10)
    assert gc.get_threshold() == (10_000, 10, 10)   # the other thread's block is open
    release.set()
    thread.join(10)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_an_exception_still_restores() -> None:
    before = gc.get_threshold()
    try:
        with fewer_collections():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
