"""``python -m mother_zoo SPLIT [SPLIT...] --out DIR [--size small|full] [--seed N] [--dtype ...]``."""

from .cli import main

raise SystemExit(main())
