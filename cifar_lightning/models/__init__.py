"""The product's models: plain networks (``MLP``, ``CNN``) and the LightningModules that train them."""

from cifar_lightning.models.classifier import CIFAR10Classifier
from cifar_lightning.models.cnn import CNN, CNNClassifier
from cifar_lightning.models.mlp import MLP, MLPClassifier

__all__ = ["CNN", "MLP", "CIFAR10Classifier", "CNNClassifier", "MLPClassifier"]
