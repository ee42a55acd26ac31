"""train.py end to end: the real script in a subprocess for both models, the rest through cli.main in-process."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import SUBPROCESS_TIMEOUT, flags, run_dirs, tiny_args, write_folder

from cifar_lightning import CIFAR10DataModule
from cifar_lightning.constants import CLASSES
from cifar_lightning.run import hardware
from cifar_lightning.run.cli import main
from cifar_lightning.run.hardware import default_precision
from cifar_lightning.run.recipes import expand_model_flag
from cifar_lightning.run.runs import RESULTS_FILE

REPO = Path(__file__).resolve().parent.parent
RESULT_KEYS = {
    "model",
    "parameters",
    "val/acc_best",
    "epochs",
    "train_seconds",
    "images_per_second",
    "best_checkpoint",
    "test/acc",
    "test/loss",
    "test/acc_per_class",
}


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / RESULTS_FILE).read_text())


@pytest.mark.processes
def test_train_script_leaves_the_garbage_collector_on_with_the_imports_frozen() -> None:
    """train.py turns collection off for its imports (0.37 s a full pass over their objects) and freezes them: if it
    forgot to turn collection back on, a long run's reference cycles would never be freed."""
    probe = "import gc, runpy; runpy.run_path('train.py', run_name='probe')"  # imports, does not run: not __main__
    probe += "; print(gc.isenabled(), gc.get_freeze_count())"
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    enabled, frozen = proc.stdout.split()
    assert enabled == "True" and int(frozen) > 100_000  # torch and Lightning alone make about 400,000


@pytest.mark.processes
@pytest.mark.parametrize(("model", "layout"), [("mlp", "folder_dir"), ("cnn", "batches_dir")])
def test_train_script_fits_then_tests(model: str, layout: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(layout)
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "train.py", *tiny_args(data, out, model, epochs=2)],
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"},  # train.py's own choice
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = run_dirs(out)
    assert run.parent.name == model
    assert {"config.yaml", "metrics.csv", RESULTS_FILE, "checkpoints"} <= {p.name for p in run.iterdir()}
    results = read_results(run)
    assert results.keys() >= RESULT_KEYS
    assert results["model"] == model and results["epochs"] == 2
    assert 0 <= results["test/acc"] <= 1 and len(results["test/acc_per_class"]) == 10
    assert Path(results["best_checkpoint"]).is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    assert results["hardware"]["huge_page_tensors"] == (thp.exists() and "[never]" not in thp.read_text())
    # an fp32 CPU run returns freed memory if it resizes its images (the CNN's config does), else it costs time
    assert results["hardware"]["malloc_returns_freed"] == (platform.libc_ver()[0] == "glibc" and model == "cnn")


def test_test_subcommand_reproduces_the_fit_runs_test_accuracy(folder_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert main(tiny_args(folder_dir, out, "cnn")) == 0
    [fit_run] = run_dirs(out)
    fitted = read_results(fit_run)
    # The checkpoint's own hyperparameters (widths [8, 16]) win over configs/cnn.yaml's defaults.
    args = [
        "test",
        *flags(
            {
                "--model": "cnn",
                "--ckpt_path": fitted["best_checkpoint"],
                "--data.data_dir": folder_dir,
                "--trainer.default_root_dir": out,
                "--wandb": "false",
                "--trainer.precision": "32-true",
            }
        ),
    ]
    assert main(args) == 0
    [test_run] = [r for r in run_dirs(out) if r != fit_run]
    tested = read_results(test_run)
    assert tested["test/acc"] == pytest.approx(fitted["test/acc"])
    assert tested["tested_checkpoint"] == fitted["best_checkpoint"]
    assert tested["evaluates"] == str(fit_run)  # the evaluation names its run, and the run records it
    refitted = read_results(fit_run)
    assert refitted["test/acc"] == tested["test/acc"] and refitted["tested_in"] == str(test_run)
    assert refitted["val/acc_best"] == fitted["val/acc_best"]  # the rest of the fit's record is kept


def test_predict_subcommand_writes_the_predictions_to_its_run_folder(folder_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert main(tiny_args(folder_dir, out, "mlp")) == 0
    [fit_run] = run_dirs(out)
    best = read_results(fit_run)["best_checkpoint"]
    assert main(["predict", *tiny_args(folder_dir, out, "mlp"), "--ckpt_path", best]) == 0
    [predict_run] = [r for r in run_dirs(out) if r != fit_run]
    with open(predict_run / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    dm = CIFAR10DataModule(data_dir=str(folder_dir))
    dm.setup("test")
    assert dm.data_test is not None
    assert [int(r["index"]) for r in rows] == list(range(40))  # 4 test images per class
    assert [int(r["label"]) for r in rows] == dm.data_test.labels.tolist()
    for row in rows[:5]:
        probabilities = [float(row[f"p_{c}"]) for c in CLASSES]
        assert int(row["predicted"]) == probabilities.index(max(probabilities))
        assert float(row["confidence"]) == max(probabilities) and sum(probabilities) == pytest.approx(1, abs=1e-4)


def test_dotted_flags_override_the_config(batches_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert main([*tiny_args(batches_dir, out, "mlp"), "--model.lr", "0.0123", "--data.batch_size", "8"]) == 0
    [run] = run_dirs(out)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["init_args"]["lr"] == 0.0123
    assert config["data"]["batch_size"] == 8
    assert config["model"]["init_args"]["hidden_sizes"] == [64]


def test_config_file_flag(batches_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "my.yaml"
    config.write_text(
        yaml.safe_dump({"model": {"class_path": "cifar_lightning.MLPClassifier", "init_args": {"hidden_sizes": [32]}}})
    )
    out = tmp_path / "runs"
    args = [
        a for a in tiny_args(batches_dir, out, "mlp") if a not in ("--model", "mlp", "--model.hidden_sizes", "[64]")
    ]
    assert main(["--config", str(config), *args]) == 0
    [run] = run_dirs(out)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["hidden_sizes"] == [32]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("precision", ["16-true", "bf16-true"])
def test_true_half_precisions_train_both_models(model: str, precision: str, folder_dir: Path, tmp_path: Path) -> None:
    """Lightning casts weights and the loaded batch to half; the DataModule's normalization makes float32 again
    after it, which once ended the MLP in a dtype mismatch."""
    # mirror TTA (2 views), not the CNN's 18: half-precision convolutions are slow on CPUs without native support
    args = [*tiny_args(folder_dir, tmp_path, model), "--trainer.precision", precision, "--model.tta_level", "1"]
    assert main(args) == 0
    [run] = run_dirs(tmp_path)
    results = read_results(run)
    assert results["precision"] == precision and results["test/acc"] is not None and results["val/acc_best"] > 0


def test_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--model", "cnn", "--print_config"])
    assert exit_.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "cifar_lightning.CNNClassifier"
    config = yaml.safe_load((REPO / "configs" / "cnn.yaml").read_text())
    assert printed["trainer"]["max_epochs"] == config["trainer"]["max_epochs"]  # the config's, not Lightning's 1000
    assert printed["model"]["init_args"]["low_res"] == 20  # CNNClassifier's default, which the config keeps
    assert printed["model"]["init_args"]["momentum"] == 0.85  # the CNN's own value, not the base class's 0.9
    assert printed["model"]["init_args"]["schedule"] == "linear"  # a base argument the CNN passes on by keyword


def test_no_test_split_reports_validation_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = write_folder(tmp_path / "d", test_per_class=None)
    out = tmp_path / "runs"
    assert main(tiny_args(data, out, "mlp")) == 0
    [run] = run_dirs(out)
    results = read_results(run)
    assert results["test/acc"] is None and results["val/acc_best"] is not None
    assert "has no test split: reporting validation only" in caplog.text
    assert [p.name for p in (run / "figures").iterdir()] == ["learning_curves.png"]  # curves even without a test


def test_help_names_the_subcommands_and_configs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0 and "fit, validate, test, predict" in text and "cnn, cnn_fast" in text


def test_a_normal_run_prints_no_warning_a_user_cannot_act_on(
    folder_dir: Path, tmp_path: Path, recwarn: pytest.WarningsRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    args = [
        *tiny_args(folder_dir, tmp_path, "mlp"),
        *flags({"--trainer.enable_model_summary": "true", "--trainer.precision": "bf16-mixed", "--export": "all"}),
    ]
    assert main(args) == 0
    messages = [str(w.message) for w in recwarn]
    for quiet in ("LeafSpec", "not supported by the model summary", "args parameter", "No complete tensor found"):
        assert not any(quiet in m for m in messages), messages
    assert "litlogger" not in caplog.text and "[torch.onnx]" not in caplog.text


def test_unknown_model_lists_valid_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "resnet"]) == 2
    err = capsys.readouterr().err
    assert "Unknown --model 'resnet'" in err and "cnn" in err and "mlp" in err


def test_missing_data_is_one_clear_message_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    args = [*tiny_args(tmp_path / "empty", tmp_path / "runs", "mlp"), "--data.download", "false"]
    args[args.index("--wandb") + 1] = "true"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No CIFAR-10 data in") and "Traceback" not in err
    assert not list((tmp_path / "runs").glob("*/*"))  # no run folder, no offline W&B run to "sync"
    assert "wandb sync" not in caplog.text


def test_model_flag_expands_to_a_leading_config() -> None:
    argv = expand_model_flag(["test", "--model.lr", "0.1", "--model=cnn"])
    assert argv[:3] == ["test", "--config", str(REPO / "configs" / "cnn.yaml")]
    assert argv[3:] == ["--model.lr", "0.1"]
    by_class = ["--model", "cifar_lightning.MLPClassifier"]
    assert expand_model_flag(by_class) == by_class


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_default_precision_follows_the_hardware(
    native_bf16: bool, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hardware, "cpu_supports_bf16", lambda: native_bf16)
    assert default_precision("cpu") == default_precision("auto") == expected
    assert default_precision("mps") == "32-true"  # Apple GPUs: no bf16 autocast worth having


def test_wandb_runs_offline_and_finishes(batches_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without credentials W&B goes offline into the run folder; two runs in one process get two W&B runs."""
    out = tmp_path / "runs"
    args = tiny_args(batches_dir, out, "mlp")
    args[args.index("--wandb") + 1] = "true"
    assert main(args) == 0
    assert main(args) == 0
    runs = run_dirs(out)
    assert len(runs) == 2
    for run in runs:
        [offline] = (run / "wandb").glob("offline-run-*")
        assert list(offline.glob("*.wandb"))  # the run's history file, ready for `wandb sync`
        assert f"wandb sync {offline}" in caplog.text


def test_diverging_loss_stops_at_once_with_the_step(
    batches_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*tiny_args(batches_dir, tmp_path / "runs", "mlp", epochs=3), "--model.lr", "1e30"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "error: train/loss became" in err and "at step" in err and "--model.lr" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--trainer.max_epochs", "0", "max_epochs must be at least 1"),
        ("--trainer.max_epochs", "-3", "max_epochs must be at least 1"),
        ("--data.batch_size", "0", "batch_size must be a positive integer, got 0"),
        ("--data.val_split", "-5", "val_split as a count must be >= 0"),
        ("--trainer.accelerator", "quantum", "invalid accelerator name"),
        ("--seed_everything", "-1", "--seed_everything must be in 0 .. 2**32 - 1"),
        ("--model.hidden_sizes", "[64, 0]", "hidden_sizes must be positive integers, got [64, 0]"),
        ("--model.drop_rate", "1.5", "drop_rate must be in [0, 1), got 1.5"),
        ("--model.lrr", "0.1", "Option 'lrr' is not accepted (did you mean: lr?)"),
        ("--trainr.max_epochs", "2", "--trainr.max_epochs 2 (did you mean: --trainer.max_epochs,"),
        ("--model", None, "--model needs a name. Valid names: cnn"),
        ("--trainer.check_val_every_n_epoch", "0", "--trainer.check_val_every_n_epoch must be positive, got 0"),
        ("--trainer.accumulate_grad_batches", "0", "--trainer.accumulate_grad_batches must be positive, got 0"),
        ("--trainer.val_check_interval", "0", "--trainer.val_check_interval must be positive, got 0"),
        pytest.param(
            "--trainer.accelerator",
            "gpu",
            "invalid configuration: No supported gpu backend found",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU machine has a GPU backend"),
        ),
        ("--trainer.default_root_dir", "{tmp}/a_file", "a_file is not a folder: name a folder"),
        ("--trainer.default_root_dir", "{tmp}/a_file/runs", "is not a folder ({tmp}/a_file is a file)"),
    ],
)
def test_bad_values_fail_before_training_with_one_message(
    flag: str, value: str | None, message: str, folder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_args(folder_dir, tmp_path / "runs", "mlp")
    (tmp_path / "a_file").write_text("not a folder")
    value, message = (None, message) if value is None else (value.format(tmp=tmp_path), message.format(tmp=tmp_path))
    if value is None:
        args.append(flag)  # the flag last, without its value
    elif flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert err.count("\n") == 1  # one line, not the usage
    assert not list((tmp_path / "runs").rglob("*"))  # no run folder, config or checkpoint left behind


def test_muon_without_a_hidden_layer_fails_before_training_with_one_message(
    folder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_args(folder_dir, tmp_path / "runs", "mlp")
    args[args.index("--model.hidden_sizes") + 1] = "[]"  # only the output layer, which Muon leaves to SGD
    assert main([*args, "--model.optimizer", "muon"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration: optimizer='muon' orthogonalizes the hidden layers' weights")
    assert err.count("\n") == 1 and not list((tmp_path / "runs").rglob("*"))


def test_unknown_precision_is_rejected_by_the_parser(
    folder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_args(folder_dir, tmp_path / "runs", "mlp")
    args[args.index("--trainer.precision") + 1] = "fp7"
    assert main(args) == 2
    assert "'bf16-mixed'" in capsys.readouterr().err and not (tmp_path / "runs").exists()  # the valid choices


@pytest.mark.parametrize(
    "flags",
    [
        ["--data.val_split", "0"],
        ["--trainer.max_epochs", "-1", "--trainer.max_steps", "3"],
        ["--trainer.fast_dev_run", "true"],
    ],
)
def test_runs_without_a_validation_test_their_last_weights(
    flags: list[str], folder_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "runs"
    args = tiny_args(folder_dir, out, "mlp")
    assert main([*args, *flags]) == 0
    assert "testing the weights training ended with" in caplog.text
    if "--trainer.fast_dev_run" in flags:  # a smoke test: Lightning logs nothing, and nothing is written
        assert not out.exists() or not list(out.rglob("*.*"))
    else:
        [run] = run_dirs(out)
        assert json.loads((run / "results.json").read_text())["test/acc"] is not None
