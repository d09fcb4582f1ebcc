"""napari dock widgets: thin views over the napari_crfgan API.

One module per widget (train, sample, consistency, memory), plus `_state` (the
evented status the widgets share), `_helpers` (form rows, layers) and `_workers`
(background work that stops when its widget goes, one-line errors).
Nothing is imported here, so `import napari_crfgan.widgets` stays free of Qt.
"""
