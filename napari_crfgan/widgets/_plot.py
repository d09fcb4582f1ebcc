"""The Train widget's loss plot: polylines drawn with QPainter, themed from napari's theme.

A full matplotlib redraw of the two panels with their legends costs about 100 ms of the
main thread on a small CPU (twice that with a layout engine), on every refresh while the
model trains. This plot stores the curves (`add`, cheap) and paints them when Qt asks
(`redraw` only schedules a paint): lines of at most two points per pixel column (the
minimum and maximum of the iterations there) with one-pixel pens, a few ticks, a legend:
a few milliseconds, however long the run.
Its minimum height is fixed, so a crowded dock scrolls instead of squeezing it.

Curves and panels answer what matplotlib's did (`lines[key].get_xdata()`, `.axes`,
`diagnostics.get_visible()`), so code and tests reading the plot need no matplotlib.
"""
from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

#: line colours on a dark and on a light theme (the same hues, lighter on dark)
PALETTES = {
    "dark": ("#5aa9e6", "#ffa552", "#6bd16b", "#f2676a", "#b89be6", "#d9a98f", "#f2a2dc", "#5fd8e6"),
    "light": ("#1f77b4", "#e8730c", "#2b9a2b", "#d32728", "#8355bd", "#8c564b", "#d158b0", "#138f9c"),
}
#: colours of napari's default dark theme, until `set_theme` is called
DEFAULT_THEME = {"type": "dark", "background": "#23242b", "text": "#f0f1f2", "frame": "#61696e", "grid": "#424a54"}


class Series:
    """One curve of the plot (what matplotlib's Line2D answered: `get_xdata`, `get_ydata`, `axes`)."""

    def __init__(self, axes: Panel, key: str, label: str, color_index: int) -> None:
        self.axes = axes
        self.key = key
        self.label = label
        self.color_index = color_index
        self._x: list[float] = []
        self._y: list[float] = []

    def append(self, x: float, y: float) -> None:
        self._x.append(float(x))
        self._y.append(float(y))

    def get_xdata(self) -> np.ndarray:
        return np.asarray(self._x, dtype=float)

    def get_ydata(self) -> np.ndarray:
        return np.asarray(self._y, dtype=float)

    def get_label(self) -> str:
        return self.label


class Panel:
    """One panel of the plot: its curves, its y label, whether it is shown."""

    def __init__(self, ylabel: str, visible: bool = True) -> None:
        self.ylabel = ylabel
        self.visible = visible
        self.series: list[Series] = []

    def get_visible(self) -> bool:
        return self.visible

    def set_visible(self, visible: bool) -> None:
        self.visible = bool(visible)


def nice_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """About `count` round values (1, 2 or 5 times a power of ten apart) in [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_text(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.0e}"
    return f"{value:.4g}"


def envelope(x: np.ndarray, y: np.ndarray, x0: float, span: float, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """The finite points of a curve, at most two per pixel column (its minimum and maximum there)."""
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) <= 2 * columns:
        return x, y
    col = np.clip(((x - x0) / span * columns).astype(int), 0, columns - 1)
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    lo, hi = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    xs = x[starts]
    return np.repeat(xs, 2), np.column_stack([lo, hi]).ravel()


class LossPlot(QWidget):
    """Loss curves of a run (top) and the CRF's diagnostics (bottom, CRF-GAN only)."""

    MIN_HEIGHT = 160

    def __init__(self, loss_labels: dict[str, str], diagnostic_labels: dict[str, str], parent=None) -> None:
        super().__init__(parent)
        self.loss_labels = dict(loss_labels)
        self.diagnostic_labels = dict(diagnostic_labels)
        self.setMinimumHeight(self.MIN_HEIGHT)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.colors = {k: QColor(v) for k, v in DEFAULT_THEME.items() if k != "type"}
        self.palette_name = DEFAULT_THEME["type"]
        self.paints = 0  # paint events so far (tests and diagnostics)
        self.axes = Panel("loss")
        self.diagnostics = Panel("CRF", visible=False)
        self.lines: dict[str, Series] = {}
        self.clear()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(320, 190)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(160, self.MIN_HEIGHT)

    # ---- data ------------------------------------------------------------------------
    def clear(self) -> None:
        self.axes.series, self.diagnostics.series = [], []
        self.diagnostics.set_visible(False)
        self.lines = {}
        self.update()

    def add(self, iteration: int, losses: dict) -> None:
        """Append one report's values (drawn at the next paint)."""
        for key, value in losses.items():
            if key in self.loss_labels:
                panel, label = self.axes, self.loss_labels[key]
            elif key in self.diagnostic_labels:
                panel, label = self.diagnostics, self.diagnostic_labels[key]
            else:
                continue
            series = self.lines.get(key)
            if series is None:
                panel.set_visible(True)
                series = self.lines[key] = Series(panel, key, label, len(self.lines))
                panel.series.append(series)
            series.append(iteration, value)

    def redraw(self) -> None:
        """Ask Qt for a paint (it comes with the next round of the event loop, once)."""
        self.update()

    # ---- theme -----------------------------------------------------------------------
    def set_theme(self, theme) -> None:
        """Colours from a napari Theme (or a dict with type, background, text, frame, grid)."""
        if isinstance(theme, dict):
            values = {**DEFAULT_THEME, **theme}
        else:
            values = {"type": theme.type, "background": theme.background.as_hex(), "text": theme.text.as_hex(),
                      "frame": theme.highlight.as_hex(), "grid": theme.primary.as_hex()}
        self.palette_name = "light" if values["type"] == "light" else "dark"
        self.colors = {k: QColor(values[k]) for k in ("background", "text", "frame", "grid")}
        self.update()

    def background_color(self) -> str:
        return self.colors["background"].name()

    # ---- painting --------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802
        self.paints += 1
        p = QPainter(self)
        try:
            p.fillRect(self.rect(), self.colors["background"])
            font = QFont(self.font())
            font.setPointSizeF(max(6.0, font.pointSizeF() * 0.85))
            p.setFont(font)
            metrics = QFontMetricsF(font)
            panels = [panel for panel in (self.axes, self.diagnostics) if panel.visible]
            x0, x1 = self._x_range()
            height = self.height() - metrics.height() * 1.6  # room for the x tick labels
            weights = [3, 2] if len(panels) == 2 else [1]
            top = 4.0
            for i, (panel, weight) in enumerate(zip(panels, weights)):
                h = (height - 4.0) * weight / sum(weights)
                self._paint_panel(p, metrics, panel, QRectF(0, top, self.width(), h), x0, x1,
                                  x_labels=i == len(panels) - 1)
                top += h
        finally:
            p.end()

    def _x_range(self) -> tuple[float, float]:
        xs = [s._x for s in self.lines.values() if s._x]
        lo = min((x[0] for x in xs), default=0.0)
        hi = max((x[-1] for x in xs), default=1.0)
        return lo, hi if hi > lo else lo + 1.0

    def _paint_panel(self, p: QPainter, metrics: QFontMetricsF, panel: Panel, rect: QRectF, x0: float, x1: float,
                     x_labels: bool) -> None:
        ys = [s.get_ydata() for s in panel.series]
        finite = np.concatenate([y[np.isfinite(y)] for y in ys]) if ys else np.zeros(0)
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if hi - lo < 1e-12:
            lo, hi = lo - max(abs(lo) * 0.1, 0.5), hi + max(abs(hi) * 0.1, 0.5)
        pad = (hi - lo) * 0.06
        lo, hi = lo - pad, hi + pad
        yticks = nice_ticks(lo, hi, max(2, int(rect.height() // (metrics.height() * 2.2))))
        label_w = max((metrics.horizontalAdvance(_tick_text(t)) for t in yticks), default=0.0)
        left = rect.left() + metrics.height() * 1.3 + label_w + 6
        plot = QRectF(left, rect.top() + 2, max(rect.right() - left - 6, 10.0), max(rect.height() - 6, 10.0))

        def px(x):
            return plot.left() + (x - x0) / (x1 - x0) * plot.width()

        def py(y):
            return plot.bottom() - (y - lo) / (hi - lo) * plot.height()

        text, grid = self.colors["text"], self.colors["grid"]
        p.setPen(QPen(grid, 1, Qt.PenStyle.DotLine))
        for t in yticks:
            p.drawLine(QPointF(plot.left(), py(t)), QPointF(plot.right(), py(t)))
        p.setPen(text)
        for t in yticks:
            s = _tick_text(t)
            p.drawText(QPointF(plot.left() - 4 - metrics.horizontalAdvance(s), py(t) + metrics.ascent() / 2 - 1), s)
        if x_labels:
            for t in nice_ticks(x0, x1, max(2, int(plot.width() // 70))):
                s = _tick_text(round(t)) if x1 - x0 >= 4 else _tick_text(t)
                w = metrics.horizontalAdvance(s)
                x = min(max(px(t) - w / 2, plot.left() - w / 2), rect.right() - w - 1)  # inside the widget
                p.drawText(QPointF(x, plot.bottom() + metrics.ascent() + 3), s)
        p.save()
        p.translate(rect.left() + metrics.ascent() + 1, plot.center().y() + metrics.horizontalAdvance(panel.ylabel) / 2)
        p.rotate(-90)
        p.drawText(QPointF(0, 0), panel.ylabel)
        p.restore()
        p.setPen(QPen(self.colors["frame"], 1))
        p.drawRect(plot)

        palette = PALETTES[self.palette_name]
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setClipRect(plot)
        for series in panel.series:
            x, y = envelope(series.get_xdata(), series.get_ydata(), x0, x1 - x0, max(int(plot.width()), 1))
            if not len(x):
                continue
            pen = QPen(QColor(palette[series.color_index % len(palette)]), 1)
            pen.setCosmetic(True)  # one pixel wide: the fast path (a wider pen is stroked, 100 times slower)
            p.setPen(pen)
            if len(x) == 1:
                p.drawEllipse(QPointF(px(x[0]), py(y[0])), 1.5, 1.5)
                continue
            sx = plot.left() + (x - x0) / (x1 - x0) * plot.width()
            sy = plot.bottom() - (y - lo) / (hi - lo) * plot.height()
            p.drawPolyline(QPolygonF([QPointF(a, b) for a, b in zip(sx.tolist(), sy.tolist())]))
        p.setClipping(False)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        self._paint_legend(p, metrics, panel, plot, palette)

    def _paint_legend(self, p: QPainter, metrics: QFontMetricsF, panel: Panel, plot: QRectF, palette) -> None:
        if not panel.series:
            return
        row = metrics.height()
        width = max(metrics.horizontalAdvance(s.label) for s in panel.series) + 22
        box = QRectF(plot.right() - width - 4, plot.top() + 3, width, row * len(panel.series) + 4)
        fill = QColor(self.colors["background"])
        fill.setAlpha(200)
        p.fillRect(box, fill)
        for i, series in enumerate(panel.series):
            y = box.top() + 2 + row * (i + 0.5)
            p.setPen(QPen(QColor(palette[series.color_index % len(palette)]), 2))
            p.drawLine(QPointF(box.left() + 3, y), QPointF(box.left() + 15, y))
            p.setPen(self.colors["text"])
            p.drawText(QPointF(box.left() + 19, y + metrics.ascent() / 2 - 1), series.label)
