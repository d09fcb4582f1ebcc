"""napari dock widgets: thin views over the napari_crfgan API.

One module per widget (train, sample, consistency, memory), plus `_state` (the
evented status the widgets share) and `_helpers` (workers, notifications, layers).
Nothing is imported here, so `import napari_crfgan.widgets` stays free of Qt.
"""
