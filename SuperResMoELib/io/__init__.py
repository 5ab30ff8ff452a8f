"""Files: image formats (NIfTI, NRRD, MHA) and acquisition tables, atomic writes, cache paths, result tables.

``from SuperResMoELib import io`` gives the image and table readers/writers of
:mod:`.formats`; the other modules are imported by name.
"""

from SuperResMoELib.io.formats import (
    SUPPORTED_SUFFIXES,
    is_volume_file,
    list_volume_files,
    read_acquisition_table,
    read_volume,
    volume_files,
    volume_stem,
    volume_suffix,
    write_acquisition_table,
    write_volume,
)

__all__ = ["SUPPORTED_SUFFIXES", "is_volume_file", "list_volume_files", "read_acquisition_table", "read_volume",
           "volume_files", "volume_stem", "volume_suffix", "write_acquisition_table", "write_volume"]
