"""Background threads of the viewer run at a lower priority than the inference thread (Linux)."""

import os
import sys
import threading

import pytest

from busi_viewer.gui.thread_priority import (
    BACKGROUND_NICENESS,
    lower_current_thread_priority,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux only")


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_lowering_changes_only_the_calling_thread():
    before_main = _niceness()
    seen = {}

    def background():
        seen["before"] = _niceness()
        seen["changed"] = lower_current_thread_priority()
        seen["after"] = _niceness()

    thread = threading.Thread(target=background)
    thread.start()
    thread.join()
    assert seen["changed"]
    assert seen["after"] == min(19, seen["before"] + BACKGROUND_NICENESS)
    assert _niceness() == before_main  # the GUI and inference threads keep their priority


def test_thumbnail_jobs_and_the_hasher_run_lowered(qtbot, tmp_path):
    from busi_viewer.gui.folder_hasher import FolderHasher
    from busi_viewer.gui.thumbnails import _Emitter, _ThumbJob

    (tmp_path / "a.bin").write_bytes(b"not an image")
    main = _niceness()
    seen = {}

    def pool_thread():  # what a QThreadPool thread does with a thumbnail job
        _ThumbJob(str(tmp_path / "a.bin"), emitter).run()
        seen["thumbnail"] = _niceness()

    emitter = _Emitter()
    thread = threading.Thread(target=pool_thread)
    thread.start()
    thread.join()

    class Probe(FolderHasher):
        def run(self):
            super().run()
            seen["hasher"] = _niceness()

    hasher = Probe([tmp_path / "a.bin"])
    with qtbot.waitSignal(hasher.finished, timeout=5000):
        hasher.start()
    assert seen["thumbnail"] > main and seen["hasher"] > main
