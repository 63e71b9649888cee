"""``python -m mother_core`` is the ``mother`` command."""

import sys

from mother_core.cli import main

sys.exit(main())
