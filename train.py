"""Train and compare CIFAR-10 classifiers: `python train.py --model cnn` (see README.md)."""

import sys

from cifar_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
