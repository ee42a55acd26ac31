"""Issue 3's outputs: figures and the test report in every run folder, what reaches W&B offline, and compare."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import read_wandb_records_until, run_dirs, tiny_args
from matplotlib.figure import Figure

from cifar_lightning.constants import CLASSES
from cifar_lightning.report import compare, plots
from cifar_lightning.run.cli import main
from cifar_lightning.run.runs import read_curves

FIGURES = {"learning_curves.png", "confusion_matrix.png", "per_class_accuracy.png", "mistakes.png"}


def test_plot_functions_are_pure_and_complete() -> None:
    curves = {"cnn": {"train/loss": [(0, 2.0), (1, 1.5)], "val/acc": [(0, 0.3), (1, 0.5)]}}
    matrix = np.arange(100).reshape(10, 10)
    figs = [
        plots.learning_curves(curves),
        plots.confusion_matrix(matrix, CLASSES),
        plots.per_class_bars({"cnn": dict.fromkeys(CLASSES, 0.5)}),
        plots.mistakes_grid(np.zeros((3, 3, 32, 32), np.uint8), [0, 1, 2], [1, 1, 3], [0.9, 0.8, 0.7], CLASSES),
        plots.comparison({**curves, "mlp": curves["cnn"]}, {"cnn": {"test acc": 0.9}, "mlp": {"test acc": None}}),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    loss_ax, acc_ax = figs[0].axes
    assert len(loss_ax.lines) == 1 and len(acc_ax.lines) == 1
    assert [t.get_text() for t in figs[1].axes[0].get_xticklabels()] == list(CLASSES)
    titles = [(t.get_text(), t.get_color()) for t in figs[3].axes[0].texts]  # red marks a mistake
    assert titles == [
        ("airplane\n-> automobile (90%)", "red"),
        ("automobile\n-> automobile (80%)", "black"),
        ("bird\n-> cat (70%)", "red"),
    ]
    assert len(figs[4].axes[1].lines) == 2  # both runs' val/acc on the shared accuracy axes
    assert len({ax.get_title() for ax in figs[4].axes}) == 3  # three panels, three titles


def test_comparison_legend_lists_only_metrics_that_have_bars() -> None:
    fig = plots.comparison({}, {"cnn": {"best val acc": 0.9, "test acc": None}, "mlp": {"best val acc": 0.6}})
    legend = fig.axes[2].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["best val acc"]  # no test result: no "test acc" entry


def test_run_folder_gets_figures_and_a_full_test_report(
    folder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    assert main(tiny_args(folder_dir, out, "cnn", epochs=2)) == 0
    [run] = run_dirs(out)
    assert {p.name for p in (run / "figures").iterdir()} == FIGURES
    results = json.loads((run / "results.json").read_text())
    assert results["test/acc"] <= results["test/acc_top5"] <= 1
    for kind in ("precision", "recall", "f1"):
        assert set(results[f"test/{kind}_per_class"]) == set(CLASSES)
    assert results["test/recall_per_class"] == results["test/acc_per_class"]  # per-class accuracy is recall
    # the test split has 4 images per class: accuracy is the mean of per-class recalls
    assert results["test/acc"] == pytest.approx(np.mean(list(results["test/acc_per_class"].values())), abs=1e-6)
    capsys.readouterr()
    assert compare.main([str(run), "--out", str(tmp_path / "c.png")]) == 0  # compare reads what a run writes
    [row] = capsys.readouterr().out.splitlines()[2:3]
    assert row.split()[:4] == [
        "cnn",
        f"{results['parameters']:,}",
        f"{results['val/acc_best']:.4f}",
        f"{results['test/acc']:.4f}",
    ]


def best_model(record: Any) -> bool:
    """A W&B record of the best checkpoint, logged as a model artifact."""
    return (
        record.WhichOneof("record_type") == "artifact"
        and record.artifact.type == "model"
        and ("best" in record.artifact.aliases)
    )


def test_wandb_offline_gets_config_tags_figures_and_a_printable_summary(folder_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    args = [*tiny_args(folder_dir, out, "mlp", epochs=2), "--model.optimizer", "sgd"]  # a model that still errs:
    args[args.index("--wandb") + 1] = "true"  # the mistakes figure needs mistakes (Muon's scored 100% here)
    assert main(args) == 0
    [run] = run_dirs(out)
    [offline] = (run / "wandb").glob("offline-run-*")
    media = {p.name.split("_")[0] for p in (offline / "files" / "media" / "images" / "figures").glob("*.png")}
    assert media == {name.removesuffix(".png").split("_")[0] for name in FIGURES}
    records = read_wandb_records_until(next(offline.glob("*.wandb")), lambda rs: any(best_model(r) for r in rs))
    [table_file] = offline.glob("files/media/table/test/predictions_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["image", "truth", "prediction", "confidence", "mistake"]
    assert 0 < len(table["data"]) <= 64 and {row[1] for row in table["data"]} <= set(CLASSES)
    assert any(best_model(r) for r in records)  # the best checkpoint, logged offline for `wandb sync`
    [run_record] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_record.run_group == "mlp"
    assert {"precision:32-true", "data:folder"} <= set(run_record.tags)
    config = {u.key for u in run_record.config.update}  # the resolved config, given when the run starts
    config |= {u.key for r in records if r.WhichOneof("record_type") == "config" for u in r.config.update}
    assert {"model", "data", "trainer", "parameters"} <= config
    summary = {
        u.key or "/".join(u.nested_key): json.loads(u.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for u in r.summary.update
    }
    curve = [v for _, v in read_curves(run)["val/acc"]]
    # plain numbers, which wandb's end-of-run console summary prints (it skips nested ones such as {"max": ...})
    assert summary["val/acc"] == pytest.approx(curve[-1])
    assert summary["val/acc_best"] == pytest.approx(max(curve))


def write_finished_run(folder: Path, model: str, val_acc: float, test_acc: float | None) -> Path:
    """The two files compare reads, as RunSummary and the CSV logger write them (the contract is checked on a real
    run in test_run_folder_gets_figures_and_a_full_test_report)."""
    folder.mkdir(parents=True)
    results = {
        "model": model,
        "parameters": 1234,
        "val/acc_best": val_acc,
        "test/acc": test_acc,
        "epochs": 2,
        "train_seconds": 3.5,
        "images_per_second": 512.0,
    }
    (folder / "results.json").write_text(json.dumps(results))
    rows = ["epoch,step,train/loss,train/acc,val/loss,val/acc"]
    rows += [f"{e},{e},{2.0 - e},{0.3 + e / 10},," for e in range(2)]
    rows += [f"{e},{e},,,{1.9 - e},{val_acc - (1 - e) / 10}" for e in range(2)]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_compare_prints_a_table_and_writes_one_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    runs = [
        write_finished_run(out / "mlp" / "1", "mlp", 0.61, None),
        write_finished_run(out / "cnn" / "2", "cnn", 0.9, 0.89),
    ]
    png = tmp_path / "cmp" / "comparison.png"
    assert compare.main([*map(str, runs), "--out", str(png)]) == 0
    header, _, *rows = capsys.readouterr().out.splitlines()[:4]
    assert header.split("  ")[:3] == ["run", "parameters", "best val acc"] and "images/s" in header
    assert [row.split() for row in rows] == [
        ["mlp", "1,234", "0.6100", "-", "2", "3.5", "512"],
        ["cnn", "1,234", "0.9000", "0.8900", "2", "3.5", "512"],
    ]
    assert png.stat().st_size > 10_000
    assert compare.main(list(map(str, runs))) == 0  # by default, beside the runs: not in the cwd
    assert (out / "comparison.png").is_file()
    assert compare.main([str(tmp_path)]) == 2  # not a run folder: a clear error, no traceback
    assert "is not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("results.json", b'{"model": "mlp", "val/acc'),
        ("results.json", b"\xff\xfe\x00"),
        ("results.json", b"[1, 2]"),
        ("metrics.csv", b"epoch,step,val/acc\n0,4,high\n"),
        ("metrics.csv", b"step,val/acc\n4,0.5\n"),
        ("results.json", b'{"model": "mlp", "parameters": "many"}'),  # values a table or a bar cannot hold
        ("results.json", b'{"model": "mlp", "test/acc": [0.5]}'),
        ("results.json", b'{"model": "mlp", "val/acc_best": true}'),
    ],
)
def test_compare_names_a_damaged_run_file(
    name: str, content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_finished_run(tmp_path / "mlp" / "1", "mlp", 0.6, None)
    (run / name).write_bytes(content)
    capsys.readouterr()
    assert compare.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / name}") and ("damaged" in err or "not a results file" in err)


def two_runs(tmp_path: Path) -> list[str]:
    out = tmp_path / "runs"
    return [
        str(write_finished_run(out / "mlp" / "1", "mlp", 0.6, None)),
        str(write_finished_run(out / "cnn" / "2", "cnn", 0.9, 0.8)),
    ]


@pytest.mark.parametrize(
    ("out", "written", "magic"),
    [
        ("figs", "figs/comparison.png", b"\x89PNG"),  # an existing folder: the figure goes inside it
        ("new/", "new/comparison.png", b"\x89PNG"),  # a trailing slash names a folder to create
        ("a/b/fig.png", "a/b/fig.png", b"\x89PNG"),  # missing parents are created
        ("fig.PDF", "fig.PDF", b"%PDF"),
        ("fig.svg", "fig.svg", b"<?xml"),
        ("old.png", "old.png", b"\x89PNG"),  # an existing figure is replaced, as a rerun of compare should
    ],
)
def test_compare_writes_the_figure_where_it_says(
    out: str,
    written: str,
    magic: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = two_runs(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "figs").mkdir()
    (tmp_path / "old.png").write_text("an older figure")
    before = {p.name for p in tmp_path.iterdir()}
    assert compare.main([*runs, "--out", out]) == 0
    assert (tmp_path / written).read_bytes().startswith(magic)
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {written}"
    top = Path(written).parts[0]
    assert {p.name for p in tmp_path.iterdir()} == before | {top}  # nothing else, such as figs.png beside figs/


@pytest.mark.parametrize(
    ("out", "says"),
    [
        ("new/x.txt", "'.txt'"),  # a format matplotlib cannot write
        ("new/x.jpg", "'.jpg'"),  # one it can, but not among those compare writes
        ("bare", "no suffix"),  # matplotlib would write bare.png
        ("new/v1.2", "'.2'"),  # a missing folder with a dot looks like a file name: a trailing slash says folder
        ("notes.txt/fig.png", "notes.txt is a file"),  # a parent that is a file
    ],
)
def test_compare_refuses_an_out_it_cannot_write_before_writing_anything(
    out: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = two_runs(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    assert compare.main([*runs, "--out", out]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line.startswith(f"error: --out {out}: ") and says in line and not captured.out
    assert sorted(tmp_path.rglob("*")) == before and (tmp_path / "notes.txt").read_text() == "mine"


def test_compare_says_when_the_disk_refuses_the_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    out = tmp_path / "figs" / "c.png"
    assert compare.main([*two_runs(tmp_path), "--out", str(out)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"error: cannot write {out} (No space left on device); choose another --out."
    assert list(out.parent.iterdir()) == []  # no temporary file left behind


def test_compare_keeps_runs_with_the_same_model_and_id_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs copied from two machines can share ``mlp/<id>``: each keeps its own row, curves and bars."""
    first = write_finished_run(tmp_path / "laptop" / "mlp" / "1", "mlp", 0.6, None)
    second = write_finished_run(tmp_path / "server" / "mlp" / "1", "mlp", 0.7, None)
    drawn: list[dict[str, Any]] = []
    real = plots.comparison

    def recording(curves: dict[str, Any], accuracies: dict[str, Any]) -> Figure:
        drawn.append(accuracies)
        return real(curves, accuracies)

    monkeypatch.setattr(plots, "comparison", recording)
    assert compare.main([str(first), str(second), str(first), "--out", str(tmp_path / "c.png")]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert [row.split()[0] for row in rows[:2]] == [str(first), str(second)] and rows[2] == ""  # given twice: once
    assert [a["best val acc"] for a in drawn[0].values()] == [0.6, 0.7]
