"""Make docs/images/viewer.png: a generated volume in 3D with its CRF consistency overlay.

Trains a small CRF-GAN on a demo set first (unless --checkpoint is given), then
opens a real napari viewer, loads the checkpoint in the "Model and sample" widget,
generates a volume, computes its consistency map in the "CRF consistency map"
widget and saves a screenshot of the window. Needs a display with OpenGL:

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
    viewer.window.resize(1600, 1150)
    sample_dock, sample = viewer.window.add_plugin_dock_widget("napari-crfgan", "Model and sample")
    crf_dock, crf = viewer.window.add_plugin_dock_widget("napari-crfgan", "CRF consistency map")
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
    sample.show_3d()
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.angles = (-15.0, 30.0, 120.0)
    camera.zoom *= 0.75
    # give each dock the height it needs
    sample_dock.parentWidget().resizeDocks([sample_dock, crf_dock], [470, 600], Qt.Orientation.Vertical)
    app.processEvents()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"saved {out}")
    viewer.close()


if __name__ == "__main__":
    main()
