"""cifar-lightning: a CIFAR-10 DataModule and two classifiers (MLP, CNN) for PyTorch Lightning."""

from cifar_lightning.constants import CLASSES, MEAN, NUM_CLASSES, STD
from cifar_lightning.data import CIFAR10DataModule, DataError
from cifar_lightning.models import CNN, MLP, CIFAR10Classifier, CNNClassifier, MLPClassifier

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
