"""Reliability: the Train widget trains in a child process (napari_crfgan.training.child).

Stop or finishing ends that process, so the memory it used is the system's again (the
napari process's own memory is back within 10% of where it was before Start), and a
crash in training ends the child, not napari. Real viewers (run under xvfb-run), tiny
presets on CPU.
"""
import gc
import multiprocessing
import os
import re
import signal

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
psutil = pytest.importorskip("psutil")

from napari.utils.notifications import notification_manager  # noqa: E402

from napari_crfgan.runtime import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.gui
WAIT_MS = 120_000


def train_dock(viewer, data, out, iterations):
    _, w = viewer.window.add_plugin_dock_widget("napari-crfgan", "Train")
    w.data.setEditText(str(data))
    w.preset.setCurrentIndex(w.preset.findData("tiny-32"))
    w.device.setCurrentIndex(w.device.findData("cpu"))
    w.batch.setValue(2)
    w.iterations.setValue(iterations)
    w.preview_every.setValue(0)
    w.out.setText(str(out))
    return w


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_training_runs_in_a_child_process_and_stop_gives_the_memory_back(make_napari_viewer, qtbot, npy_folder,
                                                                        tmp_path):
    viewer = make_napari_viewer()
    w = train_dock(viewer, npy_folder, tmp_path / "run", iterations=10_000)
    me = psutil.Process()
    gc.collect()
    before = me.memory_info().rss
    w.start()
    qtbot.waitUntil(lambda: w.last_report is not None and w.last_report.iteration >= 3, timeout=WAIT_MS)
    pid = w.child_pid
    child = psutil.Process(pid)
    assert pid != os.getpid() and child.ppid() == os.getpid() and alive(pid)
    assert child.memory_info().rss > 50e6  # torch, the model and the data live there
    # the device in use and its memory are shown
    qtbot.waitUntil(lambda: bool(re.search(rf"; on cpu, peak \d+ MB \(process {pid}\)\.$", w.status.text())),
                    timeout=5000)
    w.stop()
    qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT_MS)
    assert not alive(pid) and not multiprocessing.active_children()
    assert 3 <= load_checkpoint(tmp_path / "run").iteration == w.last_report.iteration < 10_000
    gc.collect()
    after = me.memory_info().rss
    assert abs(after - before) <= 0.10 * before, (before / 1e6, after / 1e6)


def test_a_crash_in_training_ends_the_child_and_napari_goes_on(make_napari_viewer, qtbot, npy_folder, tmp_path):
    """The out-of-memory killer's way: SIGKILL to the training process mid-run."""
    viewer = make_napari_viewer()
    w = train_dock(viewer, npy_folder, tmp_path / "run", iterations=10_000)
    w.checkpoint_every.setValue(2)
    w.start()
    qtbot.waitUntil(lambda: w.last_report is not None and w.last_report.iteration >= 3, timeout=WAIT_MS)
    before = len(notification_manager.records)
    os.kill(w.child_pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT_MS)
    messages = [str(n.message) for n in notification_manager.records[before:]]
    expected = (f"The training process was killed by signal {int(signal.SIGKILL)} (often out of memory); "
                f"its last checkpoint is kept: {tmp_path / 'run' / 'checkpoint.pt'}.")
    assert messages == [expected]
    assert w.status.text() == f"Failed: {expected}"
    assert load_checkpoint(tmp_path / "run").iteration >= 2  # what was written before the crash loads
    assert w.start_button.isEnabled() and not w.stop_button.isEnabled() and not w.state.training
    viewer.add_image(np.zeros((4, 4, 4), np.float32))  # napari is unharmed
    assert len(viewer.layers) >= 1
