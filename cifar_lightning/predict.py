"""``python -m cifar_lightning.predict``: class probabilities for image files (``report/predict.py``)."""

import sys

from cifar_lightning.report.predict import main

if __name__ == "__main__":
    sys.exit(main())
