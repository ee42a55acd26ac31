"""``python -m cifar_lightning.compare``: the runs side by side (``report/compare.py``)."""

import sys

from cifar_lightning.report.compare import main

if __name__ == "__main__":
    sys.exit(main())
