"""cifar-lightning: a CIFAR-10 DataModule and two classifiers (MLP, CNN) for PyTorch Lightning."""

from cifar_lightning.classifier import CIFAR10Classifier
from cifar_lightning.constants import CLASSES, MEAN, NUM_CLASSES, STD
from cifar_lightning.data import CIFAR10DataModule
from cifar_lightning.modules import CNNClassifier, MLPClassifier
from cifar_lightning.nets import CNN, MLP
from cifar_lightning.sources import DataError

__version__ = "0.1.0"

__all__ = [
    "CLASSES",
    "CNN",
    "MEAN",
    "MLP",
    "NUM_CLASSES",
    "STD",
    "CIFAR10Classifier",
    "CIFAR10DataModule",
    "CNNClassifier",
    "DataError",
    "MLPClassifier",
    "__version__",
]
