"""Reliability: closing a widget or the viewer while its background work runs.

Every widget stops and joins its workers when it goes (its dock closed, the viewer
closed, the interpreter exiting); a training run keeps its checkpoint; the training
process (where the data are prepared too) ends with the run; an error in a worker is
one line, not a traceback.
Real viewers (run under xvfb-run), tiny presets on CPU.
"""
import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.utils.notifications import ErrorNotification, notification_manager  # noqa: E402

from napari_crfgan.runtime import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.gui
PLUGIN = "napari-crfgan"
WAIT_MS = 120_000
TRAINING_PROCESS = "crfgan-train"


def dock(viewer, name):
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)


def choose(box, data):
    index = box.findData(data)
    assert index >= 0, data
    box.setCurrentIndex(index)


def set_up_training(w, data, out, iterations, demo_count=None):
    w.data.setEditText(str(data))
    choose(w.preset, "tiny-32")
    choose(w.device, "cpu")
    w.batch.setValue(2)
    w.iterations.setValue(iterations)
    w.preview_every.setValue(0)
    w.out.setText(str(out))
    if demo_count:
        w.demo_count.setValue(demo_count)


def training_processes():
    """The widget's training child processes still alive (the data preparation runs in them too)."""
    return [p for p in multiprocessing.active_children() if p.name == TRAINING_PROCESS]


def run_script(script: str, tmp_path) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter, on this display (xvfb), with a cache of its own."""
    env = {**os.environ, "QT_API": "pyqt6", "OMP_NUM_THREADS": "1", "CRFGAN_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)


def assert_clean_exit(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    for sign in ("has been deleted", "Aborted", "Segmentation fault", "Traceback"):
        assert sign not in proc.stderr, proc.stderr[-3000:]


def test_closing_the_viewer_right_after_docking_memory_and_speed_does_not_abort(tmp_path):
    """The issue's report: Memory and speed counts parameters in a worker as it docks; closing
    the viewer at once (the interpreter exits next) aborted the process."""
    proc = run_script("""
        import napari
        viewer = napari.Viewer(show=False)
        viewer.window.add_plugin_dock_widget("napari-crfgan", "Memory and speed")
        viewer.close()
        print("closed")
    """, tmp_path)
    assert_clean_exit(proc)
    assert proc.stdout.strip().endswith("closed")


def test_closing_the_viewer_during_a_memory_estimate_ends_the_measurement_and_exits_cleanly(tmp_path):
    """Closing the viewer kills the estimate's measuring process (it does not wait for the step)."""
    proc = run_script("""
        import time
        import napari
        import psutil
        from qtpy.QtWidgets import QApplication
        viewer = napari.Viewer(show=False)
        _, w = viewer.window.add_plugin_dock_widget("napari-crfgan", "Memory and speed")
        w.state.preset = "small-64"  # a slow enough step to be caught in the middle
        deadline = time.monotonic() + 60
        while not hasattr(w, "estimate_button") and time.monotonic() < deadline:  # the form is built
            QApplication.processEvents()
            time.sleep(0.02)
        w.run_estimate()
        def measuring():
            return [p for p in psutil.Process().children() if "memory_estimate" in " ".join(p.cmdline())]
        while not measuring() and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        child = measuring()[0]
        viewer.close()
        print("measuring process gone", not child.is_running() or child.status() == psutil.STATUS_ZOMBIE)
    """, tmp_path)
    assert_clean_exit(proc)
    assert proc.stdout.strip().endswith("measuring process gone True"), proc.stdout
    # killed, not waited for: a measurement that finished would have been cached
    assert not (tmp_path / "cache" / "memory-estimates.json").exists()


def test_exiting_mid_run_without_closing_stops_training_and_keeps_the_checkpoint(tmp_path):
    """Nobody closes the viewer: the interpreter exits while the Train widget trains."""
    out = tmp_path / "run"
    proc = run_script(f"""
        import time
        import napari
        from qtpy.QtWidgets import QApplication
        viewer = napari.Viewer(show=False)
        _, w = viewer.window.add_plugin_dock_widget("napari-crfgan", "Train")
        w.data.setEditText("demo-brain")
        w.preset.setCurrentIndex(w.preset.findData("tiny-32"))
        w.device.setCurrentIndex(w.device.findData("cpu"))
        w.batch.setValue(2)
        w.iterations.setValue(10_000)
        w.demo_count.setValue(3)
        w.out.setText({str(out)!r})
        w.start()
        deadline = time.monotonic() + 120
        while (w.last_report is None or w.last_report.iteration < 2) and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        assert w.last_report is not None, w.status.text()
        print("seen", w.last_report.iteration)
    """, tmp_path)
    assert_clean_exit(proc)
    seen = int(proc.stdout.split()[-1])
    assert seen <= load_checkpoint(out).iteration < 10_000


@pytest.mark.parametrize("how", ["close the viewer", "close the dock"])
def test_closing_mid_run_joins_the_training_worker_and_keeps_its_checkpoint(make_napari_viewer, qtbot, tmp_path,
                                                                            how):
    viewer = make_napari_viewer()
    dock_widget, w = dock(viewer, "Train")
    set_up_training(w, "demo-brain", tmp_path / "run", iterations=10_000, demo_count=3)
    w.start()
    qtbot.waitUntil(lambda: w.last_report is not None and w.last_report.iteration >= 2, timeout=WAIT_MS)
    worker, seen = w.worker, w.last_report.iteration
    assert worker.is_running
    if how == "close the viewer":
        viewer.close()
    else:
        viewer.window.remove_dock_widget(dock_widget)  # napari's close button on a dock
    # joined before close returned: not running, and the trainer wrote its checkpoint on the way out
    assert not worker.is_running
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert ckpt.is_file()
    assert worker.done and seen <= load_checkpoint(ckpt).iteration < 10_000
    assert not training_processes()
    assert not w.state.training and w.pbar is None and w.worker is None


@pytest.mark.parametrize("how", ["stop", "close the viewer"])
def test_stop_or_close_during_data_preparation_leaves_no_process_running(make_napari_viewer, qtbot, tmp_path,
                                                                        monkeypatch, how):
    monkeypatch.setenv("CRFGAN_CACHE_DIR", str(tmp_path / "cache"))  # the demo volumes are generated: slow
    viewer = make_napari_viewer()
    _, w = dock(viewer, "Train")
    set_up_training(w, "demo-brain", tmp_path / "run", iterations=5, demo_count=40)
    w.start()
    qtbot.waitUntil(lambda: "Preparing the data: " in w.status.text(), timeout=WAIT_MS)
    worker = w.worker
    assert training_processes()
    if how == "stop":
        w.stop()
        qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT_MS)  # `finished` reached the widget
        assert not training_processes()
        assert w.status.text() == "Stopped before the first iteration; nothing was trained."
        assert w.start_button.isEnabled() and not w.state.training
    else:
        viewer.close()
    assert not worker.is_running and worker.done
    assert not training_processes()
    assert w.last_report is None and not (tmp_path / "run" / "checkpoint.pt").exists()
    demo = tmp_path / "cache" / "demo"  # the demo set cut short leaves nothing half-written
    assert not demo.exists() or not any(demo.iterdir())


def test_an_unexpected_error_in_a_worker_is_one_line_and_ends_the_run(make_napari_viewer, qtbot, npy_folder,
                                                                      tmp_path, monkeypatch):
    """A RuntimeError (torch raises many) is reported like any error: one line, and the run ends."""
    monkeypatch.setattr("napari_crfgan.training.child.TRAIN_TARGET", "child_targets:broken_train")
    viewer = make_napari_viewer()
    _, w = dock(viewer, "Train")
    set_up_training(w, npy_folder, tmp_path / "run", iterations=3)
    before = len(notification_manager.records)
    w.start()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    new = notification_manager.records[before:]
    assert [n.message for n in new] == ["unexpected RuntimeError: something broke"]
    assert not isinstance(new[0], ErrorNotification)  # no traceback attached
    assert w.status.text() == "Failed: something broke"
    assert w.start_button.isEnabled() and not w.state.training
