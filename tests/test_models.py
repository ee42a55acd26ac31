"""Networks and LightningModules, parametrized over both models."""

from __future__ import annotations

import csv
import itertools
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import quiet_trainer, write_batches
from torch import Tensor

from cifar_lightning import CIFAR10DataModule, CNNClassifier, MLPClassifier
from cifar_lightning.models.classifier import CIFAR10Classifier
from cifar_lightning.models.layers import MaxPool2x2, count_parameters
from cifar_lightning.models.optim import Muon, lr_factor
from cifar_lightning.run.recipes import recipe_args

MLP_RECIPE, CNN_RECIPE = recipe_args("mlp"), recipe_args("cnn")  # the tuned training values, at a tiny size here
MODELS = {
    # whitening off unless a test asks for it: its 3,072-pixel eigendecomposition would dominate these tiny fits
    "mlp": lambda **kw: MLPClassifier(**{**MLP_RECIPE, "hidden_sizes": (64,), "whiten": False, **kw}),
    "cnn": lambda **kw: CNNClassifier(**{**CNN_RECIPE, "widths": (8, 16, 32), **kw}),
}


def tiny_trainer(tmp_path: Path, epochs: int = 1, **kwargs: Any) -> L.Trainer:
    """``quiet_trainer`` with checkpoints and every step logged to CSV."""
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    return quiet_trainer(
        tmp_path, max_epochs=epochs, logger=logger, enable_checkpointing=True, log_every_n_steps=1, **kwargs
    )


@pytest.mark.parametrize(
    "net",
    [
        MLPClassifier(hidden_sizes=(32, 16)).net,
        CNNClassifier(widths=(8, 16)).net,
        CNNClassifier(widths=(8, 16, 32, 64)).net,
    ],
)
def test_nets_map_images_to_logits(net: torch.nn.Module) -> None:
    net.eval()
    x = torch.randn(5, 3, 32, 32)
    logits = net(x)
    assert logits.shape == (5, 10) and torch.isfinite(logits).all()
    assert torch.allclose(net(x[:2]), logits[:2], atol=1e-5)  # each image's logits depend on that image alone


def keep(saved: list[torch.Tensor], tensor: torch.Tensor) -> torch.Tensor:
    saved.append(tensor)
    return tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_max_pool_equals_torch_and_keeps_less_for_backward(dtype: torch.dtype) -> None:
    """Same outputs and gradients as ``nn.MaxPool2d(2)`` (ties, an odd size, NHWC), without keeping the input."""
    x = torch.randn(3, 4, 31, 31).to(dtype).contiguous(memory_format=torch.channels_last)
    x[0, 0, :2, :2] = 1.0  # a tie: both must route the gradient to the same pixel
    grad = torch.randn(3, 4, 15, 15).to(dtype)
    outs, grads, saved_bytes = [], [], []
    for pool in (MaxPool2x2(), torch.nn.MaxPool2d(2)):
        inputs, saved = x.clone().requires_grad_(), list[torch.Tensor]()
        with torch.autograd.graph.saved_tensors_hooks(partial(keep, saved), lambda t: t):
            out = pool(inputs * 1)  # `* 1`: a non-leaf input, as a conv's output is
        out.backward(grad)
        assert inputs.grad is not None
        outs.append(out)
        grads.append(inputs.grad)
        saved_bytes.append(sum(t.numel() * t.element_size() for t in saved))
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1]) and grads[0].stride() == grads[1].stride()
    assert saved_bytes[1] - saved_bytes[0] == x.numel() * x.element_size()  # all but the input
    assert torch.equal(MaxPool2x2().eval()(x), torch.nn.functional.max_pool2d(x, 2))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_checkpoint_holds_the_model_and_not_much_more(name: str, tmp_path: Path) -> None:
    """The default models' saved weights are about their tensors' size: a buffer that is a view of a larger one (the
    MLP's 3,072 x 256 whitening, once cut from a 3,072 x 3,072 identity) would save the whole storage it views."""
    model = {"mlp": MLPClassifier, "cnn": CNNClassifier}[name]()
    tensor_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    assert (tmp_path / "weights.pt").stat().st_size < 1.05 * tensor_bytes + 100_000


def test_mlp_has_the_parameters_its_sizes_say() -> None:
    # bias-free linear layers before batch norm (weight and shift), then a linear head with a bias
    expected = 3072 * 32 + 2 * 32 + 32 * 16 + 2 * 16 + 16 * 10 + 10
    assert count_parameters(MLPClassifier(hidden_sizes=(32, 16), whiten=False).net) == expected


@pytest.mark.parametrize("name", MODELS)
def test_every_trainable_parameter_gets_a_gradient(name: str) -> None:
    """No dead weight: a parameter that the loss never reaches would be trained by weight decay alone."""
    module = MODELS[name]()
    module.train()
    torch.nn.functional.cross_entropy(module(torch.randn(8, 3, 32, 32)), torch.arange(8)).backward()
    dead = [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead, f"{name}: no gradient reaches {dead}"
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    assert all(dict(module.named_parameters())[n].grad is None for n in frozen)
    if name == "cnn":  # the whitened stem (set from data) and batch norm's scales (a shift-only norm) never train
        assert frozen[0] == "net.stem.weight" and all(n.endswith(".weight") and "norm" in n for n in frozen[1:])
    else:
        assert frozen == []


def test_cnn_has_the_seed_architecture_parts() -> None:
    kinds = {type(m) for m in CNNClassifier().net.modules()}
    for part in (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.MaxPool2d, torch.nn.Dropout):
        assert any(issubclass(kind, part) for kind in kinds), part
    assert "Conv2d" not in {type(m).__name__ for m in MLPClassifier().net.modules()}


def test_lr_schedule_warms_up_then_decays() -> None:
    factors = [lr_factor(s, total_steps=100, warmup_steps=20, schedule="linear") for s in range(100)]
    assert factors[0] == pytest.approx(0.05) and factors[19] == 1.0
    assert max(factors) == 1.0 and factors[-1] < 0.02
    assert all(a >= b for a, b in itertools.pairwise(factors[19:]))
    assert lr_factor(60, 100, 20, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 20, "constant") == 1.0


@pytest.mark.parametrize("name", MODELS)
def test_learns_and_logs_every_key(name: str, tmp_path: Path) -> None:
    """A few epochs on easy synthetic data: far above chance, with every documented metric key logged.

    400 images, not the usual 100: on 100, the CNN's default recipe (tuned for 45,000) ended anywhere from 20% to 85%
    over seeds 0 to 4; on 400 from 37% to 91%, seed 0 at 80%.
    """
    L.seed_everything(0)
    data = write_batches(tmp_path / "data", train_per_class=40)
    dm = CIFAR10DataModule(data_dir=str(data), val_split=100, batch_size=32)
    # The default hyperparameters. The CNN twice as wide as MODELS': at widths 8-16-32 the recipe stayed at chance on
    # an AVX2-only CPU, whose Muon steps orthogonalize in fp32 (best val/acc 0.18; 0.88 at 16-32-64, 2026-12-03).
    model = MODELS[name](**({"widths": (16, 32, 64)} if name == "cnn" else {}))
    trainer = tiny_trainer(tmp_path, epochs=10)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, ckpt_path="best")
    assert trainer.log_dir is not None
    rows = list(csv.DictReader((Path(trainer.log_dir) / "metrics.csv").open()))
    keys = {k for row in rows for k, v in row.items() if v}
    expected = {
        "train/loss",
        "train/acc",
        "train/loss_step",
        "train/lr",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "test/loss",
        "test/acc",
        "test/acc_airplane",
        "test/acc_truck",
    }
    assert expected <= keys
    val_acc = [float(r["val/acc"]) for r in rows if r.get("val/acc")]
    best = [float(r["val/acc_best"]) for r in rows if r.get("val/acc_best")]
    assert best[-1] == pytest.approx(max(val_acc))  # val/acc_best is the running max, not the last value
    assert max(val_acc) >= 0.5, f"{name} did not learn the synthetic classes: {val_acc}"  # chance: 0.1


@pytest.mark.parametrize("name", MODELS)
def test_logged_accuracy_equals_manual_computation(name: str, batches_dir: Path, tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=30, batch_size=7)
    model = MODELS[name]()
    [logged] = tiny_trainer(tmp_path).validate(model, datamodule=dm, verbose=False)
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in dm.val_dataloader():
            correct += (model.tta_logits(dm.transform(images, train=False)).argmax(-1) == labels).sum().item()
    assert logged["val/acc"] == pytest.approx(correct / 30)


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_reloads_with_weights_only(name: str, batches_dir: Path, tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)
    model = MODELS[name](drop_rate=0.3)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    path = trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
    assert torch.load(path, weights_only=True)["hyper_parameters"]["drop_rate"] == 0.3
    loaded = type(model).load_from_checkpoint(path, weights_only=True)
    x = torch.randn(4, 3, 32, 32)
    model.eval(), loaded.eval()
    torch.testing.assert_close(loaded(x), model(x))
    assert isinstance(loaded, CIFAR10Classifier) and loaded.hparams["drop_rate"] == 0.3


def test_whitened_stem_decorrelates_patches() -> None:
    """After set_whitening, the stem's first 12 channels see 2x2 patches with (near) identity covariance."""
    torch.manual_seed(0)
    mixing = torch.randn(3, 3)  # correlated colour channels, like real images
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(64, 3, 32, 32)).cumsum(-1) / 4  # correlated pixels
    net = CNNClassifier(widths=(8, 16)).net
    assert not net.whitened and not net.stem.weight.requires_grad
    net.set_whitening(net.whitening_statistics(images), eps=1e-7)  # tiny eps: whiten even the weakest direction
    assert net.whitened
    out = torch.nn.functional.conv2d(images, net.stem.weight[:12])  # (N, 12, 31, 31), bias left out
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)
    torch.testing.assert_close(cov, torch.eye(12), atol=0.02, rtol=0)
    torch.testing.assert_close(net.stem.weight[12:], -net.stem.weight[:12])


@pytest.fixture(scope="module")
def correlated_pixels() -> tuple[Tensor, Tensor]:
    """4,000 images whose neighbouring pixels are correlated and whose mean is off-centre, and their whitening
    statistics (shared: each whitening test is one 3,072 x 3,072 eigendecomposition, ~10 s on one AVX2 core)."""
    torch.manual_seed(0)
    noise = torch.randn(4000, 3, 32, 32)
    images = noise + 0.8 * noise.roll(1, dims=-1) + 0.8 * noise.roll(1, dims=-2) + 0.5
    return images, MLPClassifier(hidden_sizes=(8,)).net.whitening_statistics(images)


@pytest.mark.parametrize("whiten_dim", [None, 256], ids=["zca", "pca"])
def test_mlp_whitening_gives_uncorrelated_unit_variance_inputs(
    whiten_dim: int | None, correlated_pixels: tuple[Tensor, Tensor]
) -> None:
    images, statistics = correlated_pixels
    net = MLPClassifier(hidden_sizes=(64,), whiten_eps=1e-6, whiten_dim=whiten_dim).net
    net.set_whitening(statistics)
    out = (images.flatten(1) - net.input_mean) @ net.input_whitening  # (4000, 3072) or (4000, 256)
    torch.testing.assert_close(out.mean(0), torch.zeros(out.shape[1]), atol=1e-3, rtol=0)
    torch.testing.assert_close(out.T @ out / len(out), torch.eye(out.shape[1]), atol=0.02, rtol=0)
    if whiten_dim is None:  # ZCA stays in pixel space: a symmetric transform
        torch.testing.assert_close(net.input_whitening, net.input_whitening.T)
        return
    # PCA keeps the directions that carry the most variance of the pixels: more than any other 256 directions
    centred = images.flatten(1) - net.input_mean
    kept = torch.linalg.qr(net.input_whitening).Q
    variance = lambda basis: (centred @ basis).var(0).sum()  # noqa: E731
    assert variance(kept) > 1.2 * variance(torch.linalg.qr(torch.randn(3072, 256)).Q)
    assert net(images[:2]).shape == (2, 10) and net.layers[0].in_features == 256
    zca = MLPClassifier(hidden_sizes=(64,), whiten_dim=None).net
    assert count_parameters(net) < count_parameters(zca) / 10  # the first layer shrank from 3,072 inputs to 256
    with pytest.raises(ValueError, match=r"whiten_dim must be between 1 and 3072 \(or None for ZCA\), got 0"):
        MLPClassifier(whiten_dim=0)


WHITENING = {"mlp": "net.input_whitening", "cnn": "net.stem.weight"}


@pytest.mark.parametrize("name", WHITENING)  # the models with a whitening transform
def test_whitening_is_set_when_training_starts_and_never_trained(name: str, batches_dir: Path, tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)
    model = MODELS[name](whiten=True)
    before = model.state_dict()[WHITENING[name]].clone()
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    assert model.net.whitened
    whitened = model.state_dict()[WHITENING[name]].clone()
    assert not torch.equal(whitened, before)
    # Resuming from the checkpoint keeps the whitening as it was: no second whitening, no gradient steps.
    resumed = MODELS[name](whiten=True)
    ckpt = trainer.checkpoint_callback.best_model_path  # type: ignore[union-attr]
    tiny_trainer(tmp_path / "resumed", epochs=2).fit(resumed, datamodule=dm, ckpt_path=ckpt)
    torch.testing.assert_close(resumed.state_dict()[WHITENING[name]], whitened, atol=0, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_mirror_tta_is_flip_invariant(name: str) -> None:
    model = MODELS[name](tta_level=1, tta_threshold=1.0).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.tta_logits(x), model.tta_logits(x.flip(-1)))
        torch.testing.assert_close(model.tta_logits(x), (model(x) + model(x.flip(-1))) / 2)


def test_shift_tta_averages_six_views() -> None:
    model = MODELS["cnn"](tta_level=2, tta_threshold=1.0).eval()
    x = torch.randn(2, 3, 32, 32)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, padded[..., :32, :32], padded[..., 2:, 2:]]
    weights = [1 / 4, 1 / 8, 1 / 8]  # the unshifted pair carries half the weight
    with torch.no_grad():
        expected = sum(w * (model(v) + model(v.flip(-1))) for w, v in zip(weights, views, strict=True))
        torch.testing.assert_close(model.tta_logits(x), expected)
    with pytest.raises(ValueError, match=r"tta_level must be 0 .* got 4"):
        MODELS["cnn"](tta_level=4)


def test_level_3_tta_weighs_the_image_and_its_eight_shifts_equally_each_with_its_mirror() -> None:
    model = MODELS["cnn"](tta_level=3, tta_threshold=1.0).eval()
    x = torch.randn(2, 3, 32, 32)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [padded[..., dy : dy + 32, dx : dx + 32] for dy in range(3) for dx in range(3)]  # (1, 1) is x itself
    with torch.no_grad():
        expected = sum(model(v) + model(v.flip(-1)) for v in views) / 18
        torch.testing.assert_close(model.tta_logits(x), expected)
        torch.testing.assert_close(model.tta_logits(x), model.tta_logits(x.flip(-1)))  # mirror-invariant too


def test_selective_tta_gives_the_extra_views_only_to_unsure_images_whatever_the_batch() -> None:
    model = MODELS["cnn"](tta_level=2, tta_threshold=1.0).eval()
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        single, every = model(x), model.tta_logits(x)
        confidence = single.softmax(-1).amax(-1)
        model.hparams["tta_threshold"] = confidence.median().item()  # about half the images are below it
        selective = model.tta_logits(x)
        alone = torch.cat([model.tta_logits(image[None]) for image in x])  # one image per batch: the same decisions
    unsure = confidence < model.hparams["tta_threshold"]
    assert 0 < unsure.sum() < len(x)
    torch.testing.assert_close(selective[unsure], every[unsure])  # all six views
    torch.testing.assert_close(selective[~unsure], single[~unsure])  # the confident keep their single view
    torch.testing.assert_close(alone, selective, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="tta_threshold"):
        MODELS["cnn"](tta_threshold=0.0)


def test_bias_lr_scale_and_lookahead(batches_dir: Path, tmp_path: Path) -> None:
    """1-D parameters get the scaled learning rate; with lookahead the run ends on the slow (averaged) weights."""
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)
    model = MLPClassifier(hidden_sizes=(32,), lr=0.1, bias_lr_scale=8.0, lookahead=True, whiten=False)
    trainer = tiny_trainer(tmp_path, epochs=2)
    trainer.fit(model, datamodule=dm)
    [matrices, vectors] = trainer.optimizers[0].param_groups
    assert vectors["initial_lr"] == pytest.approx(8 * matrices["initial_lr"]) == pytest.approx(0.8)
    assert vectors["weight_decay"] == pytest.approx(matrices["weight_decay"] / 8)
    assert model.lookahead.slow  # lookahead ran
    for key, value in model.net.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, model.lookahead.slow[key], atol=0, rtol=0)


class _SaveAt(L.Callback):
    """Saves a checkpoint after ``step`` steps and keeps a copy of the lookahead state it holds."""

    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step
        self.slow: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            assert isinstance(pl_module, CIFAR10Classifier)
            self.slow = {k: v.clone() for k, v in pl_module.lookahead.slow.items()}


def test_lookahead_slow_weights_travel_in_the_checkpoint(batches_dir: Path, tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)
    model = MLPClassifier(hidden_sizes=(32,), lookahead=True, whiten=False)
    saver = _SaveAt(tmp_path / "mid.ckpt", step=7)  # 2 steps after lookahead's step 5: slow and fast differ
    tiny_trainer(tmp_path, epochs=2, callbacks=[saver]).fit(model, datamodule=dm)
    restored = MLPClassifier.load_from_checkpoint(tmp_path / "mid.ckpt", weights_only=True)
    assert restored.lookahead.slow.keys() == saver.slow.keys() and saver.slow
    for key, slow in saver.slow.items():
        torch.testing.assert_close(restored.lookahead.slow[key], slow, atol=0, rtol=0)
    fast = restored.net.state_dict()
    assert any(not torch.equal(fast[key], slow) for key, slow in saver.slow.items())  # state worth keeping


def test_fit_validates_with_tta_only_in_its_last_epoch(batches_dir: Path, tmp_path: Path) -> None:
    model = MODELS["cnn"](tta_level=2)
    calls: list[tuple[str, int]] = []  # (trainer function, epoch) of every TTA evaluation
    tta_logits = model.tta_logits

    def counting(x: torch.Tensor) -> torch.Tensor:
        calls.append((model.trainer.state.fn.value, model.current_epoch))  # type: ignore[union-attr]
        return tta_logits(x)

    model.tta_logits = counting  # type: ignore[method-assign]
    dm = CIFAR10DataModule(data_dir=str(batches_dir), batch_size=16, val_split=20)
    trainer = tiny_trainer(tmp_path, epochs=3, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert {epoch for fn, epoch in calls if fn == "fit"} == {2}
    trainer.validate(model, datamodule=dm)  # a standalone validation always uses TTA
    assert any(fn == "validate" for fn, _ in calls)


def test_muon_steps_the_hidden_layers_and_refuses_a_network_without_them(batches_dir: Path, tmp_path: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(batches_dir), val_split=20, batch_size=16)
    model = MODELS["cnn"](optimizer="muon", muon_lr=0.1)
    trainer = tiny_trainer(tmp_path, epochs=2)
    trainer.fit(model, datamodule=dm)
    opt = trainer.optimizers[0]
    assert isinstance(opt, Muon)
    [filters] = [g for g in opt.param_groups if g["orthogonalize"]]
    convs = [m.weight for m in model.net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.requires_grad]
    assert len(convs) == 6 and {id(p) for p in filters["params"]} == {id(p) for p in convs}
    assert filters["initial_lr"] == 0.1 and filters["weight_decay"] == 0.0 and filters["momentum"] == 0.6
    for conv in convs:  # renormalized every step; the last, tiny step barely moves the norm off sqrt(out)
        assert conv.norm().item() == pytest.approx(len(conv) ** 0.5, rel=0.05)
    mlp = MODELS["mlp"](hidden_sizes=(32, 16), whiten=False, optimizer="muon")
    [matrices] = [g["params"] for g in mlp.make_optimizer().param_groups if g["orthogonalize"]]
    assert [tuple(p.shape) for p in matrices] == [(32, 3072), (16, 32)]  # the hidden layers; the output on SGD
    with pytest.raises(ValueError, match="optimizer='muon' orthogonalizes the hidden layers' weights, and MLP has no"):
        tiny_trainer(tmp_path / "mlp").fit(MODELS["mlp"](hidden_sizes=(), optimizer="muon"), datamodule=dm)


def test_progressive_resizing_trains_small_first_then_at_full_size(batches_dir: Path, tmp_path: Path) -> None:
    model = CNNClassifier(widths=(8, 16), low_res=12, low_res_fraction=0.5, optimizer="sgd", lr=0.05)
    sizes: list[int] = []
    model.net.register_forward_pre_hook(lambda net, args: sizes.append(args[0].shape[-1]) if net.training else None)
    dm = CIFAR10DataModule(data_dir=str(batches_dir), batch_size=16, val_split=20)  # 80 training images: 5 steps
    tiny_trainer(tmp_path, epochs=2, num_sanity_val_steps=0).fit(model, dm)
    assert sizes == [12] * 5 + [32] * 5  # the first half of the 10 steps at 12 pixels, the rest at full size
    assert model.step_cost(0.2) == pytest.approx((12 / 32) ** 2) and model.step_cost(0.5) == 1.0
    with pytest.raises(ValueError, match=r"low_res must be between 5 \(for 2 blocks\) and 32 pixels, got 4"):
        CNNClassifier(widths=(8, 16), low_res=4)
    with pytest.raises(ValueError, match=r"low_res_fraction is a share of training, from 0 to 1; got 1\.5"):
        CNNClassifier(low_res=20, low_res_fraction=1.5)
