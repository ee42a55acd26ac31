"""Faults and scale: signals, hard kills and resume, atomic checkpoints, bad --ckpt_path, CPU DDP, determinism."""

from __future__ import annotations

import csv
import errno
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import zipfile
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import torch
from helpers import (
    SUBPROCESS_TIMEOUT,
    flags,
    read_wandb_records_until,
    read_wandb_run_records,
    run_dirs,
    tiny_args,
    write_folder,
)

from cifar_lightning import MLPClassifier
from cifar_lightning.models.classifier import CIFAR10Classifier
from cifar_lightning.run.checkpoints import AtomicCheckpointIO
from cifar_lightning.run.cli import main
from cifar_lightning.run.loggers import wandb_run_id
from cifar_lightning.run.resume import Limits, Resume, resolve_checkpoint
from cifar_lightning.run.runs import read_results

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
STEPS_PER_EPOCH = 5  # tiny_args: 100 training images, 20 held out, batches of 16
# Variants of a case the default suite already covers, kept under `-m slow` so that the default suite stays within
# its 3 minutes on 2 cores of either CPU class.
SLOW = pytest.mark.slow


def subprocess_env() -> dict[str, str]:
    """This environment, minus the W&B service an earlier in-process test started: a child would register its run
    with that service, which then holds the run id after the child is killed (a shell has no such service)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**env, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}


def signal_at(step: int, name: str) -> list[str]:
    return flags(
        {
            "--trainer.callbacks+=helpers.SignalAt": None,
            "--trainer.callbacks.step": step,
            "--trainer.callbacks.signal_name": name,
        }
    )


def metric_rows(run: Path, key: str) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row.get(key)]


@pytest.mark.parametrize(("name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_signal_stops_at_a_step_with_checkpoint_results_and_finished_wandb(
    name: str, code: int, folder_dir: Path, tmp_path: Path
) -> None:
    args = tiny_args(folder_dir, tmp_path, "mlp", epochs=3) + signal_at(7, name)
    args[args.index("--wandb") + 1] = "true"
    handler = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup or `cmd &`
    assert main(args) == code
    [run] = run_dirs(tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["interrupted"]["signal"] == name and results["interrupted"]["step"] == 7
    last = torch.load(results["interrupted"]["checkpoint"], map_location="cpu", weights_only=True)
    assert last["global_step"] == 7
    [wandb_file] = run.glob("wandb/offline-run-*/*.wandb")
    records = read_wandb_records_until(wandb_file, lambda rs: any(r.HasField("exit") for r in rs))
    exits = [r.exit.exit_code for r in records if r.HasField("exit")]
    assert exits == [code]  # the W&B run was finished, and marked failed
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C handling restored to what it was


@pytest.mark.processes
@pytest.mark.parametrize(
    ("interval", "saved_step"),
    [(["--ckpt_every_n_steps", "2"], 6), pytest.param(["--ckpt_every_minutes", "1e-6"], 7, marks=SLOW)],
)
def test_hard_kill_resumes_with_ckpt_path_last_in_the_same_run(
    interval: list[str], saved_step: int, folder_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = [*tiny_args(folder_dir, tmp_path, "mlp", epochs=3), *interval]
    args[args.index("--wandb") + 1] = "true"
    command = [sys.executable, "train.py", *args, *signal_at(8, "SIGKILL")]  # killed before step 8's save
    killed = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    [run] = run_dirs(tmp_path)
    assert not (run / "results.json").exists()
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == saved_step

    assert main([*args, "--ckpt_path", "last"]) == 0
    assert run_dirs(tmp_path) == [run]
    results = json.loads((run / "results.json").read_text())
    assert results["epochs"] == 3 and results["global_step"] == 3 * STEPS_PER_EPOCH
    assert results["resumed_from"] == str(run / "checkpoints/last.ckpt") and results["interrupted"] is None
    # the whole run's figures: both parts' training images (steps after the checkpoint were redone), and speed
    assert results["parts"] == 2 and results["train_images"] == 3 * STEPS_PER_EPOCH * 16
    assert results["images_per_second"] > 0 and results["train_seconds"] > 0
    assert [row["epoch"] for row in metric_rows(run, "val/acc")] == ["0", "1", "2"]  # kept, and none twice
    steps = [row["step"] for row in metric_rows(run, "train/loss_step")]
    assert len(steps) == len(set(steps)) == 3 * STEPS_PER_EPOCH
    # One W&B run id for both parts; the killed part's file may end before its run record, so read the folder names.
    run_id = wandb_run_id(run, "mlp", run.name)
    parts = sorted(run.glob("wandb/offline-run-*"))
    assert len(parts) == 2 and all(run_id in part.name for part in parts)
    [resumed] = parts[-1].glob("*.wandb")
    assert {r.run_id for r in read_wandb_run_records(resumed)} == {run_id}
    assert f"wandb sync {parts[0]} {parts[1]}" in caplog.text  # the hint uploads both parts


def _save_forever(path: Path, saved: Connection) -> None:
    """Saves 16 MB checkpoints to ``path`` in a loop, telling ``saved`` after each one, until it is killed."""
    torch.set_num_threads(1)  # a forked child must not use the parent's OpenMP pool
    io, n = AtomicCheckpointIO(), 0
    while True:
        n += 1
        io.save_checkpoint({"n": n, "weights": torch.full((4_000_000,), float(n))}, path)
        saved.send(n)


def test_kill_while_saving_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    fork = multiprocessing.get_context("fork")  # the saver starts at once, without importing torch again
    for delay in (0.05, 0.2, 0.35):
        receive, send = fork.Pipe(duplex=False)
        saver = fork.Process(target=_save_forever, args=(path, send), daemon=True)
        saver.start()
        assert receive.poll(SUBPROCESS_TIMEOUT) and receive.recv()  # one complete save
        time.sleep(delay)  # then die somewhere inside a later save (SIGKILL: no handler, no cleanup)
        saver.kill()
        saver.join()
        assert saver.exitcode == -signal.SIGKILL
        checkpoint = torch.load(path, weights_only=True)
        assert torch.equal(checkpoint["weights"], torch.full((4_000_000,), float(checkpoint["n"])))
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".ckpt"] == ["last.ckpt"]


def test_atomic_save_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.ckpt"
    AtomicCheckpointIO().save_checkpoint({"v": 1}, path)

    def broken_save(obj: object, f: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        AtomicCheckpointIO().save_checkpoint({"v": 2}, path)
    assert torch.load(path, weights_only=True) == {"v": 1} and list(tmp_path.iterdir()) == [path]


def test_a_full_disk_while_checkpointing_is_one_message_and_keeps_the_last_checkpoint(
    folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_save, saves = torch.save, []

    def save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        if isinstance(obj, dict) and "state_dict" in obj:  # checkpoints only, not the data cache
            saves.append(obj["global_step"])
            if len(saves) > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "runs"
    assert main(tiny_args(folder_dir, out, "mlp", epochs=3)) == 1
    printed = capsys.readouterr().err
    err = printed.strip().splitlines()[-1]  # after the decoding progress bar
    assert "Traceback" not in printed
    assert err.startswith("error: Could not write the checkpoint") and "No space left on device" in err
    assert "resume with --ckpt_path last" in err
    [run] = run_dirs(out)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == saves[1]
    assert not list(run.glob("checkpoints/.*.tmp")) and not (run / "results.json").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """One tiny finished MLP run for the tests that only read its files: (data folder, runs root, run folder)."""
    tmp = tmp_path_factory.mktemp("finished")
    data, out = write_folder(tmp / "data"), tmp / "runs"
    assert main(tiny_args(data, out, "mlp")) == 0
    [run] = run_dirs(out)
    return data, out, run


def damage_a_tensor(good: Path, bad: Path) -> None:
    """A copy of the checkpoint ``good`` with one byte flipped in the middle of its largest tensor (not truncated)."""
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        record = max(archive.infolist(), key=lambda info: info.file_size)
    data[record.header_offset + 100 + record.file_size // 2] ^= 0xFF  # past the local header, inside the tensor
    bad.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["garbage", "truncated", "damaged", "other_model", "missing"])
def test_bad_ckpt_path_is_one_clear_message(
    kind: str, finished_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder_dir, out, first = finished_run
    good = first / "checkpoints" / "last.ckpt"
    bad = tmp_path / "bad.ckpt"
    if kind == "garbage":
        bad.write_bytes(b"not a checkpoint" * 64)
    elif kind == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "damaged":
        damage_a_tensor(good, bad)
    model = "cnn" if kind == "other_model" else "mlp"
    ckpt = good if kind == "other_model" else bad
    capsys.readouterr()
    assert main([*tiny_args(folder_dir, out, model), "--ckpt_path", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --ckpt_path") and err.count("\n") == 0
    expected = {
        "garbage": "not a PyTorch checkpoint",
        "truncated": "not a PyTorch checkpoint",
        "damaged": "fails its CRC check",
        "other_model": "MLPClassifier with other weights",
        "missing": "no such file",
    }
    assert expected[kind] in err
    assert run_dirs(out) == [first]  # nothing written


def test_resuming_a_finished_run_changes_nothing_and_more_epochs_train_on(
    folder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    args = tiny_args(folder_dir, out, "mlp", epochs=2)
    assert main(args) == 0
    [run] = run_dirs(out)
    kept = {path: path.read_bytes() for path in (run / "results.json", run / "metrics.csv", run / "model.pt2")}
    capsys.readouterr()
    assert main([*args, "--ckpt_path", "last"]) == 0  # a requeued cluster job that always passes it
    assert "Nothing to resume" in capsys.readouterr().out
    assert {path: path.read_bytes() for path in kept} == kept and run_dirs(out) == [run]

    assert main([*tiny_args(folder_dir, out, "mlp", epochs=3), "--ckpt_path", "last"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["global_step"] == 3 * STEPS_PER_EPOCH and results["val/acc_best"] is not None
    assert run_dirs(out) == [run]


def test_ckpt_path_last_before_any_run_starts_fresh_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cluster job that always passes --ckpt_path last starts its first run fresh, as Lightning does."""
    model, limits = MLPClassifier(hidden_sizes=(8,), whiten=False), Limits(None, None, None)
    with caplog.at_level("INFO"):
        assert resolve_checkpoint("last", tmp_path / "runs" / "mlp", model, None, limits) == Resume(None)
    expected = f"--ckpt_path last: no mlp run under {tmp_path / 'runs'} has checkpoints/last.ckpt; starting fresh."
    assert expected in caplog.text
    assert resolve_checkpoint("best", tmp_path / "runs" / "mlp", model, "test", limits) == Resume("best")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("metrics.csv:binary", "metrics.csv is damaged after 0 readable rows (UnicodeDecodeError)"),
        ("metrics.csv:text", "metrics.csv is damaged after"),
        ("results.json:truncated", "results.json is not readable JSON"),
    ],
)
def test_a_damaged_run_file_refuses_the_resume_in_one_line_and_keeps_it(
    damage: str, message: str, folder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The files a resume reads back (metrics.csv's earlier rows, results.json) are refused by name, before
    training, not met later as a raw traceback or silently rewritten; with the damaged file moved aside the run
    resumes (or says there is nothing left to train)."""
    args = tiny_args(folder_dir, tmp_path, "mlp", epochs=2)
    assert main([*args, *signal_at(7, "SIGTERM")]) == 143
    [run] = run_dirs(tmp_path)
    name, kind = damage.split(":")
    path = run / name
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "text":
        path.write_text(path.read_text().replace("\n1,", "\nnot-a-step,", 1) + "0,0,oops\n")
    else:
        path.write_text(path.read_text()[:20])
    damaged = path.read_bytes()
    capsys.readouterr()
    assert main([*args, "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot resume {run}: ") and message in err and err.count("\n") == 0
    assert path.read_bytes() == damaged  # nothing rewritten
    path.rename(path.with_suffix(".damaged"))
    assert main([*args, "--ckpt_path", "last"]) == 0
    assert read_results(run)["global_step"] == 2 * STEPS_PER_EPOCH


def test_a_finished_run_without_its_results_file_has_nothing_to_resume(
    folder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_args(folder_dir, tmp_path, "mlp", epochs=2)
    assert main(args) == 0
    [run] = run_dirs(tmp_path)
    (run / "results.json").unlink()
    capsys.readouterr()
    assert main([*args, "--ckpt_path", "last"]) == 0
    assert "Nothing to resume" in capsys.readouterr().out and not (run / "results.json").exists()


@pytest.mark.parametrize(
    ("phase", "stop", "code"),
    [
        ("training", ["--trainer.callbacks+=helpers.SignalAt", "--trainer.callbacks.step", "12"], 143),
        ("validation", ["--trainer.callbacks+=helpers.SignalInValidation", "--trainer.callbacks.nth", "2"], 143),
        ("between fits", [], 0),
    ],
)
def test_val_acc_best_survives_a_resume_from_any_phase(
    phase: str, stop: list[str], code: int, folder_dir: Path, tmp_path: Path
) -> None:
    """The running maximum is the run's, not the resumed part's: after the resume the weights score at chance
    (``ZeroHead`` with ``lr 0``), and val/acc_best, in metrics.csv and results.json, stays the earlier best."""
    # the SGD recipe this test was written for: there lr 0 freezes every weight (Muon's layers have their own rate)
    sgd = ["--model.optimizer", "sgd", "--model.lr", "0.05"]
    assert main([*tiny_args(folder_dir, tmp_path, "mlp", epochs=3), *sgd, *stop]) == code
    [run] = run_dirs(tmp_path)
    before = [float(r["val/acc"]) for r in csv.DictReader((run / "metrics.csv").open()) if r.get("val/acc")]
    resume = ["--ckpt_path", "last", "--model.lr", "0", "--trainer.callbacks+=helpers.ZeroHead"]
    assert main([*tiny_args(folder_dir, tmp_path, "mlp", epochs=4), *sgd, *resume]) == 0
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("val/acc")]
    assert len(rows) > len(before) and float(rows[-1]["val/acc"]) < max(before), "the resumed weights must score lower"
    best = [float(r["val/acc_best"]) for r in rows]
    assert best == [max(float(r["val/acc"]) for r in rows[: i + 1]) for i in range(len(rows))], phase
    assert read_results(run)["val/acc_best"] == pytest.approx(max(before), abs=1e-4)


def test_ctrl_c_during_test_exits_130_and_keeps_the_finished_fit(
    folder_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    args = tiny_args(folder_dir, out, "mlp")
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert main([*args, "--trainer.callbacks+=helpers.InterruptTest"]) == 130
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C from a KeyboardInterrupt on
    printed = capsys.readouterr()
    assert "--ckpt_path last" not in printed.out + printed.err  # a resume cannot redo a test
    [run] = run_dirs(out)
    results = json.loads((run / "results.json").read_text())
    assert results["val/acc_best"] is not None and results["train_seconds"] is not None
    assert results["interrupted"] is None and results["test/acc"] is None
    assert main([*args, "--ckpt_path", "last"]) == 0
    assert "not tested" in capsys.readouterr().out


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 3221225472 bytes."
        ),
    ],
)
def test_running_out_of_memory_is_one_line_with_what_to_do(
    error: Exception,
    folder_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def out_of_memory(*args: object) -> None:
        raise error

    monkeypatch.setattr(CIFAR10Classifier, "training_step", out_of_memory)
    assert main(tiny_args(folder_dir, tmp_path, "mlp")) == 1
    printed = capsys.readouterr().err
    assert "Traceback" not in printed
    err = printed.strip().splitlines()[-1]
    assert err.startswith("error: out of memory (") and "--data.batch_size (now 16)" in err


def test_a_signal_during_validation_stops_before_the_next_step(folder_dir: Path, tmp_path: Path) -> None:
    args = [*tiny_args(folder_dir, tmp_path, "mlp", epochs=3), "--trainer.callbacks+=helpers.SignalInValidation"]
    assert main(args) == 143
    [run] = run_dirs(tmp_path)
    interrupted = json.loads((run / "results.json").read_text())["interrupted"]
    assert interrupted["step"] == STEPS_PER_EPOCH  # epoch 0's validation finished, epoch 1 never stepped
    assert torch.load(interrupted["checkpoint"], weights_only=True)["global_step"] == STEPS_PER_EPOCH


def test_ctrl_c_while_decoding_the_data_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_folder(tmp_path / "data")

    def interrupted_decoding(*args: object) -> None:
        raise KeyboardInterrupt  # Ctrl-C in the minute it takes to decode 50,000 JPEGs

    monkeypatch.setattr("cifar_lightning.data.sources.read_folder", interrupted_decoding)
    args = tiny_args(data, tmp_path / "runs", "mlp")
    args[args.index("--wandb") + 1] = "true"
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert main(args) == 130
    finally:
        signal.signal(signal.SIGINT, handler)
    assert not list((tmp_path / "runs").glob("*/*"))  # no run folder, results.json or W&B run for a run that never ran
    assert not list(data.glob(".cache/*"))  # and no half-written cache
    assert "before training started; nothing to resume" in caplog.text and "wandb sync" not in caplog.text


def test_ctrl_c_during_the_export_keeps_the_finished_run(
    folder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def interrupted_export(*args: object) -> None:
        raise KeyboardInterrupt  # what Ctrl-C does once training is over and the handlers are back

    monkeypatch.setattr("cifar_lightning.report.export.export_net", interrupted_export)
    args = tiny_args(folder_dir, tmp_path, "mlp")
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert main(args) == 130
    finally:
        signal.signal(signal.SIGINT, handler)
    [run] = run_dirs(tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["interrupted"] is None and results["val/acc_best"] is not None
    assert "after training, while exporting" in caplog.text and "resume with" not in caplog.text
    monkeypatch.undo()
    assert main([*args, "--ckpt_path", "last"]) == 0  # nothing left to train, and the results stay
    assert json.loads((run / "results.json").read_text()) == results


@pytest.mark.processes
@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_after_training_stops_a_process_started_with_ctrl_c_ignored(
    name: str, code: int, folder_dir: Path, tmp_path: Path
) -> None:
    """A job started in the background (`train.py ... &`) begins with SIGINT ignored, and Lightning's SIGTERM handler
    only records the signal: neither may let a signal during the export go unheard, then test and exit 0."""
    args = [*tiny_args(folder_dir, tmp_path, "mlp"), "--trainer.callbacks+=helpers.SignalInExport"]
    args += ["--trainer.callbacks.signal_name", name]
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        env=subprocess_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == code, done.stderr[-1500:]
    [run] = run_dirs(tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["val/acc_best"] is not None and results["test/acc"] is None  # fit kept, no test after the stop
    assert "after training, while exporting" in done.stdout + done.stderr


@pytest.mark.parametrize("kind", ["garbage", "truncated", "damaged"])
def test_evaluating_a_damaged_checkpoint_is_one_clear_message(
    kind: str, finished_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder_dir, out, run = finished_run
    bad = tmp_path / "bad.ckpt"
    good = run / "checkpoints" / "last.ckpt"
    if kind == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "damaged":
        damage_a_tensor(good, bad)
    else:
        bad.write_bytes(b"\x00" * 1000)
    capsys.readouterr()
    assert main(["test", *tiny_args(folder_dir, out, "mlp"), "--ckpt_path", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    if kind == "damaged":
        assert err.startswith(f"error: --ckpt_path {bad} is damaged") and "CRC" in err and err.count("\n") == 0
    else:
        assert err == f"error: --ckpt_path {bad} is not a PyTorch checkpoint (damaged or truncated, or another format)."


@pytest.mark.processes
def test_ddp_on_two_cpu_processes_shards_data_and_syncs_metrics(folder_dir: Path, tmp_path: Path) -> None:
    args = [*tiny_args(folder_dir, tmp_path, "mlp", epochs=2), "--model.tta_level", "0"]
    args[args.index("--wandb") + 1] = "true"
    probe = ["--trainer.callbacks+=helpers.RecordShards", "--trainer.callbacks.out", str(tmp_path / "probe")]
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    proc = subprocess.run(
        [sys.executable, "train.py", *args, *ddp, *probe],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / "probe" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for epoch in range(2):
        shard0, shard1 = (set(rank["train"][epoch].tolist()) for rank in ranks)
        assert not shard0 & shard1 and len(shard0) == len(shard1) == 40  # 80 training images, disjoint halves
    preds, labels = (torch.cat([rank[key] for rank in ranks]) for key in ("preds", "labels"))
    assert len(labels) == 20  # every validation image once, over both ranks
    [run] = run_dirs(tmp_path)  # one run folder, written by rank 0
    logged = float(metric_rows(run, "val/acc")[-1]["val/acc"])
    assert logged == pytest.approx((preds == labels).float().mean().item(), abs=1e-6)
    assert len(list(run.glob("wandb/offline-run-*"))) == 1 and (run / "results.json").is_file()


@pytest.mark.processes
@pytest.mark.parametrize(
    ("name", "rank", "code"),
    [("SIGTERM", None, 143), pytest.param("SIGTERM", 0, 143, marks=SLOW), pytest.param("SIGINT", 0, 130, marks=SLOW)],
)
def test_a_signal_under_ddp_stops_every_rank_at_one_step_with_a_checkpoint(
    name: str, rank: int | None, code: int, folder_dir: Path, tmp_path: Path
) -> None:
    """Every rank signalled (SLURM, `docker stop`) or only rank 0 (`kill <pid>`, Ctrl-C): both end with the
    checkpoint, not stuck in a collective."""
    args = [
        *tiny_args(folder_dir, tmp_path, "mlp", epochs=3),
        *signal_at(3, name),
        *flags({"--trainer.devices": 2, "--trainer.strategy": "ddp"}),
    ]
    if rank is not None:
        args += ["--trainer.callbacks.rank", str(rank)]
    proc = subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == code, proc.stderr[-3000:]
    [run] = run_dirs(tmp_path)
    interrupted = json.loads((run / "results.json").read_text())["interrupted"]
    assert interrupted["signal"] == name and interrupted["step"] >= 3
    assert torch.load(interrupted["checkpoint"], weights_only=True)["global_step"] == interrupted["step"]


@pytest.mark.processes
def test_a_divergence_on_one_ddp_rank_stops_every_rank(folder_dir: Path, tmp_path: Path) -> None:
    poison = ["--trainer.callbacks+=helpers.PoisonRank", "--trainer.callbacks.step", "2"]
    ddp = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
    command = [sys.executable, "train.py", *tiny_args(folder_dir, tmp_path, "mlp"), *ddp, *poison]
    proc = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    # Both ranks decide and report it; alone, rank 0 would die in its next all-reduce (gloo: "Connection closed by
    # peer"; NCCL: a hang until its watchdog's timeout).
    assert proc.stderr.count("train/loss became") == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_a_ddp_run_closes_its_process_group_when_it_ends(folder_dir: Path, tmp_path: Path) -> None:
    # Lightning closes only NCCL groups; a gloo group left to the interpreter's exit can abort the process (-6).
    ddp = ["--trainer.devices", "1", "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    assert main([*tiny_args(folder_dir, tmp_path, "mlp", epochs=1), *ddp]) == 0
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("model", [pytest.param("mlp", marks=SLOW), "cnn"])
def test_same_seed_same_metrics_to_the_last_digit(model: str, folder_dir: Path, tmp_path: Path) -> None:
    texts = []
    for out in (tmp_path / "a", tmp_path / "b"):
        assert main([*tiny_args(folder_dir, out, model, epochs=2), "--trainer.deterministic", "true"]) == 0
        [run] = run_dirs(out)
        texts.append((run / "metrics.csv").read_text())
    assert texts[0] == texts[1] and "val/acc" in texts[0]
