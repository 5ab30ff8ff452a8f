"""Developer tools that render previews (the panel, the slice views); not shipped with the extension."""
