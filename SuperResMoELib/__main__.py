"""``python -m SuperResMoELib``: the ``superresmoe`` command line (see :mod:`SuperResMoELib.app.cli`)."""

import sys

from SuperResMoELib.app.cli import main

sys.exit(main())
