"""The metrics every model shares, on torchmetrics: one accuracy implementation, cloned per stage, and the test
report. torchmetrics accumulates over batches and synchronizes the pieces across ranks before computing."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def accuracy(num_classes: int, stage: str) -> MetricCollection:
    """Top-1 accuracy over every example of the epoch, logged as ``<stage>/acc``."""
    return MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro")}, prefix=f"{stage}/")


class TestReport(MetricCollection):
    """Top-5 accuracy and, per class, precision, recall (the class's accuracy), F1 and the confusion matrix."""

    __test__ = False  # not a pytest class, whatever its name says

    def __init__(self, num_classes: int) -> None:
        super().__init__(
            {
                "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
                "precision": MulticlassPrecision(num_classes, average="none"),
                "recall": MulticlassRecall(num_classes, average="none"),
                "f1": MulticlassF1Score(num_classes, average="none"),
                "confusion": MulticlassConfusionMatrix(num_classes),
            }
        )

    def logs(self, class_names: Sequence[str]) -> tuple[dict[str, Tensor], Tensor]:
        """``test/acc_top5`` and ``test/{acc,precision,f1}_<class>`` to log, and the (true, predicted) counts."""
        report = self.compute()
        confusion = report.pop("confusion")
        logs = {"test/acc_top5": report.pop("acc_top5")}
        for i, name in enumerate(class_names):
            logs[f"test/acc_{name}"] = report["recall"][i]
            logs.update({f"test/{kind}_{name}": values[i] for kind, values in report.items() if kind != "recall"})
        return logs, confusion
