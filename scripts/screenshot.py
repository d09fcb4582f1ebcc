"""Make docs/images/viewer.png and viewer_slice.png: the four docks tabbed, a generated volume.

Trains a small CRF-GAN on a demo set first (unless --checkpoint is given), then
opens a real napari viewer with the four docks tabbed on the right, loads the
checkpoint in the "Model and sample" widget, generates a volume, computes its
consistency map in the "CRF consistency map" widget, and saves two screenshots of the
window: the volume in 3D at an oblique camera with the map over it (viewer.png), and
an axial slice with the map, the Train dock in front (viewer_slice.png). Needs a
display with OpenGL:

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshot.py
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_checkpoint(args) -> Path:
    """Train the demo checkpoint (continuing or reusing an earlier run in --run)."""
    from tqdm import tqdm

    from napari_crfgan import TrainOptions, run_training

    options = TrainOptions(data=args.data, preset=args.preset, iterations=args.iterations, batch_size=2, out=args.run,
                           demo_count=args.demo_count, resume="auto")
    with tqdm(total=args.iterations, desc="training", mininterval=5) as bar:
        result = run_training(options, on_report=lambda r: bar.update(r.iteration - bar.n))
    return result.checkpoint_path


def wait(app, widget, timeout: float = 600) -> None:
    t0 = time.monotonic()
    while widget.worker is not None:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the widget's worker did not finish")
        app.processEvents()
        time.sleep(0.02)
    app.processEvents()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="use this checkpoint instead of training one")
    p.add_argument("--data", default="demo-brain")
    p.add_argument("--demo-count", type=int, default=8)
    p.add_argument("--preset", default="small-64")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--run", default=str(ROOT / "runs" / "screenshot"))
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "viewer.png"))
    args = p.parse_args()
    ckpt = Path(args.checkpoint) if args.checkpoint else train_checkpoint(args)

    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-crfgan")
    app = QApplication.instance()
    viewer.window.resize(1600, 1000)
    docks = {name: viewer.window.add_plugin_dock_widget("napari-crfgan", name, tabify=True)
             for name in ("Train", "Model and sample", "CRF consistency map", "Memory and speed")}
    (sample_dock, sample), (crf_dock, crf) = docks["Model and sample"], docks["CRF consistency map"]
    # the docks' own width (a form is cut off in napari's narrower default dock area)
    viewer.window._qt_window.resizeDocks([sample_dock], [430], Qt.Orientation.Horizontal)
    sample_dock.raise_()
    sample.path.setText(str(ckpt))
    sample.load()
    wait(app, sample)
    sample.seed.setValue(args.seed)
    sample.generate()
    wait(app, sample)
    volume = viewer.layers[-1]
    volume.rendering = "mip"
    crf.layer.setCurrentText(volume.name)
    crf.kind.setCurrentText("agreement")
    crf.opacity.setValue(0.3)
    crf.compute()
    wait(app, crf)
    sample.show_3d()  # napari-crfgan's oblique camera, fitted to the volume
    crf_dock.raise_()
    app.processEvents()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"saved {out}")
    viewer.dims.ndisplay = 2
    viewer.dims.set_point(0, viewer.dims.range[0].start + (viewer.dims.range[0].stop - viewer.dims.range[0].start) / 2)
    viewer.reset_view()
    docks["Train"][0].raise_()
    app.processEvents()
    slice_out = out.with_name(out.stem + "_slice" + out.suffix)
    viewer.screenshot(str(slice_out), canvas_only=False)
    print(f"saved {slice_out}")
    viewer.close()


if __name__ == "__main__":
    main()
