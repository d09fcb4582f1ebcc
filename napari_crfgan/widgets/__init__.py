"""napari dock widgets: thin views over the napari_crfgan API.

One module per widget (train, sample, consistency, memory), plus `_state` (the
evented status the widgets share), `_helpers` (form rows, scrolling forms, labels,
layers, which warnings are shown), `_plot` (the loss plot), `_loading` (a dock's form
is built once a background thread has imported torch) and `_workers` (background
work that stops when its widget goes, one-line errors).
Nothing is imported here, so `import napari_crfgan.widgets` stays free of Qt; the
widget modules themselves import no torch (see `_loading`).
"""
