"""The application layer: the ``superresmoe`` CLI, the file-level pipeline, progress reporting."""
