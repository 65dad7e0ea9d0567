"""Checks made before a study exists: data, model, runs folder, trackers, row lengths."""
