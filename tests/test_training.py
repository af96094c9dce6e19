"""Heads, losses, the two trainers, early stopping, seeding and the per-genre prior correction."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from postergenre.inference.predictor import head_logits
from postergenre.training.config import TrainConfig, resolve_preprocessing
from postergenre.training.heads import HEAD_TYPES, create_head, head_from_description
from postergenre.training.loop import macro_auc, predict_logits
from postergenre.training.losses import AsymmetricLoss, bce_loss, create_loss, masked_mean
from postergenre.training.multilabel import train_multilabel
from postergenre.training.per_genre import balanced_sample_mask, prior_correction, train_per_genre

G = 7  # an odd genre count catches hard-coded widths
TRAINERS = {"multilabel": train_multilabel, "per-genre": train_per_genre}


def synthetic(n: int, d: int = 16, seed: int = 0, bias=(-3, -2.5, -2, -1.5, -1, -0.5, 0)):
    """Features and labels drawn from a known logistic model with genres of differing prevalence."""
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=(n, d)).astype(np.float32)
    w = np.random.default_rng(99).normal(size=(d, len(bias))) / 2
    p = 1 / (1 + np.exp(-((x - 2) / 3 @ w + np.asarray(bias))))
    return x, (rng.random(p.shape) < p).astype(np.int8)


@pytest.mark.parametrize("kind", HEAD_TYPES)
def test_head_shapes_gradients_and_no_nan(kind):
    """Check that every head gives (N, G) finite logits and every parameter gets a gradient."""
    head = create_head(kind, 10, G, hidden=8)
    head.set_standardisation(np.random.default_rng(0).normal(5, 2, size=(20, 10)))
    logits = head(torch.randn(4, 10) * 100)
    assert logits.shape == (4, G) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    # Standardisation and prior correction are buffers, never trained.
    names = {n for n, _ in head.named_parameters()}
    assert not names & {"feature_mean", "feature_std", "logit_offset"}


def test_head_standardisation_uses_training_features():
    """Check that a head stores its training features' mean and std, guarding constant features."""
    x = np.random.default_rng(0).normal(3, 2, size=(200, 5)).astype(np.float32)
    x[:, 4] = 7.0
    head = create_head("linear", 5, G)
    head.set_standardisation(x)
    np.testing.assert_allclose(head.feature_mean.numpy(), x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(head.feature_std.numpy()[:4], x.std(0)[:4], rtol=1e-4)
    assert head.feature_std[4] > 0


@pytest.mark.parametrize("kind", HEAD_TYPES)
def test_numpy_head_equals_torch_head(kind):
    """Check that the torch-free head in the predictor computes the torch head's logits."""
    torch.manual_seed(0)
    head = create_head(kind, 10, G, hidden=6)
    head.set_standardisation(np.random.default_rng(1).normal(2, 3, size=(30, 10)))
    head.logit_offset.copy_(torch.linspace(-2, 1, G))
    x = np.random.default_rng(2).normal(2, 3, size=(9, 10)).astype(np.float32)
    tensors = {k: v.numpy() for k, v in head.state_dict().items()}
    np.testing.assert_allclose(head_logits(kind, tensors, x), predict_logits(head, x), rtol=1e-5, atol=1e-5)
    rebuilt = head_from_description(head.describe())
    rebuilt.load_state_dict(head.state_dict())
    np.testing.assert_array_equal(predict_logits(rebuilt, x), predict_logits(head, x))


def test_unknown_head_and_loss_are_rejected():
    """Check that unknown names list the valid choices."""
    with pytest.raises(ValueError, match="expected one of linear, mlp, per_genre_mlp"):
        create_head("transformer", 4, G)
    with pytest.raises(ValueError, match="expected one of bce, asl"):
        create_loss("focal")
    with pytest.raises(ValueError, match="expected one of multilabel, per-genre"):
        TrainConfig(mode="ovr")


@pytest.mark.parametrize("name", ["bce", "asl"])
def test_losses_are_elementwise_finite_and_nonnegative(name):
    """Check that both losses give an (N, G) non-negative loss, finite even for extreme logits."""
    logits = torch.tensor([[-200.0, -5, 0, 5, 200, 1, -1]] * 2, requires_grad=True)
    targets = torch.tensor([[0.0, 1, 0, 1, 0, 1, 1], [1.0, 0, 1, 0, 1, 0, 0]])
    loss = create_loss(name)(logits, targets)
    assert loss.shape == (2, G) and torch.isfinite(loss).all() and (loss >= 0).all()
    loss.mean().backward()
    assert torch.isfinite(logits.grad).all()


def test_asl_without_focusing_or_clipping_is_bce():
    """Check ASL against a trusted reference: with gamma 0 and no clip it is binary cross-entropy."""
    logits, targets = torch.randn(6, G) * 3, (torch.rand(6, G) > 0.5).float()
    plain = AsymmetricLoss(gamma_neg=0, gamma_pos=0, clip=0)(logits, targets)
    torch.testing.assert_close(plain, bce_loss(logits, targets), rtol=1e-5, atol=1e-6)
    # Focusing and clipping shrink the loss of easy negatives to nothing.
    easy = AsymmetricLoss()(torch.tensor([[-4.0]]), torch.tensor([[0.0]]))
    assert easy.item() == 0


def test_masked_mean_averages_each_genre_over_its_own_sample():
    """Check that the masked loss is the mean of per-genre means, skipping genres with an empty mask."""
    loss = torch.tensor([[1.0, 10.0, 5.0], [3.0, 20.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert masked_mean(loss, mask).item() == pytest.approx((2.0 + 10.0) / 2)
    assert masked_mean(loss).item() == pytest.approx(loss.mean().item())


def test_balanced_sample_mask_draws_one_negative_per_positive():
    """Check that each genre keeps all positives and as many negatives, redrawn with the generator."""
    y = np.zeros((50, 3), dtype=np.int8)
    y[:5, 0], y[:30, 1] = 1, 1  # a rare genre, a genre with more positives than negatives, an empty one
    rng = np.random.default_rng(0)
    first, second = balanced_sample_mask(y, rng), balanced_sample_mask(y, rng)
    assert first[:5, 0].all() and first[:, 0].sum() == 10
    assert first[:, 1].sum() == 50  # only 20 negatives: all of them are kept
    assert not first[:, 2].any()
    assert not np.array_equal(first[:, 0], second[:, 0])


@pytest.mark.parametrize("mode", TRAINERS)
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_same_seed_gives_same_weights(mode, head):
    """Check that training twice with one seed gives identical weights, and another seed does not."""
    x, y = synthetic(300)
    data = (x[:200], y[:200]), (x[200:], y[200:])
    config = TrainConfig(mode=mode, head=head, hidden=8, epochs=4, batch_size=64, seed=3)
    first = TRAINERS[mode](*data, config).head.state_dict()
    second = TRAINERS[mode](*data, config).head.state_dict()
    other = TRAINERS[mode](*data, TrainConfig(mode=mode, head=head, hidden=8, epochs=4, batch_size=64, seed=4))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(
        first["fc.weight" if head == "linear" else "hidden.weight"],
        other.head.state_dict()["fc.weight" if head == "linear" else "hidden.weight"],
    )


@pytest.mark.parametrize("mode", TRAINERS)
def test_training_learns_and_restores_best_epoch(mode):
    """Check that training beats chance, logs history rows and keeps the best validation epoch."""
    x, y = synthetic(1500)
    validation = (x[1000:], y[1000:])
    config = TrainConfig(mode=mode, epochs=30, patience=3, lr=1e-2)
    result = TRAINERS[mode]((x[:1000], y[:1000]), validation, config)
    history = result.history
    assert set(history[0]) >= {"epoch", "loss", "val_macro_auc", "val_balanced_accuracy"}
    best = max(history, key=lambda row: row["val_macro_auc"])
    assert result.best_epoch == best["epoch"]
    assert macro_auc(validation[1], predict_logits(result.head, validation[0])) == pytest.approx(best["val_macro_auc"])
    assert best["val_macro_auc"] > 0.75


def test_per_genre_prior_correction_calibrates_probabilities():
    """Check that per-genre probabilities, corrected to the training prior, average to each genre's prevalence."""
    x, y = synthetic(8000, seed=1)
    train, validation, test = (x[:4000], y[:4000]), (x[4000:5000], y[4000:5000]), (x[5000:], y[5000:])
    # A linear head without dropout: the correction itself is under test, not dropout's effect on it.
    config = TrainConfig(mode="per-genre", head="linear", dropout=0.0, epochs=30, patience=5, lr=1e-2, batch_size=512)
    result = train_per_genre(train, validation, config)
    probabilities = 1 / (1 + np.exp(-predict_logits(result.head, test[0])))
    prevalence = test[1].mean(0)
    np.testing.assert_allclose(probabilities.mean(0), prevalence, atol=0.03)
    # Without the correction the balanced model overstates the rare genres badly.
    offset = prior_correction(train[1])
    np.testing.assert_allclose(result.head.logit_offset.numpy(), offset)
    uncorrected = 1 / (1 + np.exp(-(predict_logits(result.head, test[0]) - offset)))
    assert uncorrected.mean(0)[0] > prevalence[0] + 0.2


@pytest.mark.parametrize("mode", TRAINERS)
def test_genre_without_positives_does_not_crash(mode):
    """Check that a genre with no positive in training or validation still trains to finite logits."""
    x, y = synthetic(300)
    y[:, 2] = 0
    result = TRAINERS[mode]((x[:200], y[:200]), (x[200:], y[200:]), TrainConfig(mode=mode, epochs=3))
    logits = predict_logits(result.head, x)
    assert np.isfinite(logits).all()
    assert np.isfinite([row["val_macro_auc"] for row in result.history]).all()


def test_no_usable_validation_genre_keeps_last_epoch_with_warning():
    """Check that validation without both classes in any genre disables early stopping, with a warning."""
    x, y = synthetic(200)
    result = train_multilabel((x[:150], y[:150]), (x[150:], np.zeros_like(y[150:])), TrainConfig(epochs=4, patience=1))
    assert result.best_epoch == 4 and len(result.history) == 4
    assert "early stopping was off" in result.warnings[0]


def test_epoch_limit_reached_while_improving_warns():
    """Check that stopping on the epoch limit while validation still improves says to raise --epochs."""
    x, y = synthetic(600)
    result = train_multilabel((x[:400], y[:400]), (x[400:], y[400:]), TrainConfig(epochs=2, lr=1e-4))
    assert result.best_epoch == 2
    assert any("raise --epochs" in w for w in result.warnings)


@pytest.mark.parametrize("mode", TRAINERS)
def test_training_without_validation_runs_every_epoch_and_keeps_the_last(mode):
    """Check a refit's fit (no validation) trains exactly the epochs asked, as many steps as early stopping's."""
    x, y = synthetic(300)
    config = TrainConfig(mode=mode, epochs=5, patience=1, batch_size=64)
    refit = TRAINERS[mode]((x, y), None, config)
    assert refit.best_epoch == 5 and len(refit.history) == 5 and not refit.stopped_early
    assert all(np.isfinite(row["loss"]) for row in refit.history)
    # The same data and seed with a validation set that cannot stop it: the same weights.
    kept = TRAINERS[mode]((x, y), (x, np.zeros_like(y)), config)
    assert all(torch.equal(v, kept.head.state_dict()[k]) for k, v in refit.head.state_dict().items())


def test_refit_trains_the_head_again_on_train_and_validation_for_the_chosen_epochs():
    """Check a refit trains on train + validation for the first fit's best epoch, and swaps the head in."""
    from types import SimpleNamespace

    from postergenre.training.refit import refit_choice

    x, y = synthetic(900)
    ids = [str(k) for k in range(900)]
    sides = {"train": (ids[:600], x[:600], y[:600]), "validation": (ids[600:], x[600:], y[600:])}
    config = TrainConfig(epochs=40, patience=3, lr=1e-2)
    first = train_multilabel(sides["train"][1:], sides["validation"][1:], config)
    first_head = first.head
    choice = SimpleNamespace(saved={"image": (first, sides)}, text_head=None, refits={})
    info = refit_choice(choice, config)
    assert info["epochs"] == {"image": first.best_epoch} and info["posters"] == 900
    assert first.head is not first_head
    expected = train_multilabel((x, y), None, TrainConfig(epochs=first.best_epoch, patience=3, lr=1e-2)).head
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in first.head.state_dict().items())


def test_a_refit_started_right_after_the_first_fit_is_the_refit_made_after_the_choice():
    """Check fit_then_refit's head (trained beside other candidates) is the one refit_choice would train,
    and that refit_choice saves it without training again."""
    from types import SimpleNamespace

    from postergenre.training.refit import fit_then_refit, refit_candidate, refit_choice

    x, y = synthetic(900)
    ids = [str(k) for k in range(900)]
    sides = {"train": (ids[:600], x[:600], y[:600]), "validation": (ids[600:], x[600:], y[600:])}
    config = TrainConfig(epochs=40, patience=3, lr=1e-2)
    first_fit = partial(train_multilabel, sides["train"][1:], sides["validation"][1:], config)
    first, refitted = fit_then_refit("image", first_fit, sides, partial(refit_candidate, config, []))()
    early_head, seconds = refitted
    assert seconds > 0 and early_head is not first.head
    assert fit_then_refit("image", first_fit, sides)()[1] is None  # no refit asked: the first fit alone

    choice = SimpleNamespace(saved={"image": (first, sides)}, text_head=None, refits={"image": refitted})
    info = refit_choice(choice, config)
    assert first.head is early_head and info["epochs"] == {"image": first.best_epoch}
    assert info["seconds"] == round(seconds, 2)
    later = train_multilabel(sides["train"][1:], sides["validation"][1:], config)
    refit_choice(SimpleNamespace(saved={"image": (later, sides)}, text_head=None, refits={}), config)
    assert all(torch.equal(v, later.head.state_dict()[k]) for k, v in early_head.state_dict().items())


def test_bf16_head_training_learns_what_fp32_learns_and_the_run_records_which_ran():
    """Check precision="bf16" (emulated where the CPU lacks it) trains a head as well as fp32, side by side
    or alone, and that config.json's precision names the one that ran."""
    from postergenre.training.loop import native_bf16, train_concurrently

    x, y = synthetic(900)
    train, validation = (x[:600], y[:600]), (x[600:], y[600:])
    configs = {p: TrainConfig(epochs=30, patience=30, lr=1e-2, precision=p) for p in ("fp32", "bf16")}
    results = {precision: train_multilabel(train, validation, config) for precision, config in configs.items()}
    fp32, bf16 = (max(row["val_macro_auc"] for row in results[p].history) for p in ("fp32", "bf16"))
    assert fp32 > 0.8 and abs(bf16 - fp32) < 0.02
    config = TrainConfig(epochs=5, lr=1e-2, precision="bf16")
    beside = train_concurrently({p: lambda: train_multilabel(train, validation, config) for p in ("a", "b")})
    alone = train_multilabel(train, validation, config)
    assert all(torch.equal(v, beside["a"].head.state_dict()[k]) for k, v in alone.head.state_dict().items())

    assert TrainConfig(precision="fp32").to_dict()["precision"] == "fp32"
    assert TrainConfig(precision="bf16").to_dict()["precision"] == "bf16"
    assert TrainConfig().to_dict()["precision"] == ("bf16" if native_bf16() else "fp32")
    with pytest.raises(ValueError, match="unknown precision 'fp16'; expected one of auto, fp32, bf16"):
        TrainConfig(precision="fp16")


def test_dropout_and_learning_rate_default_to_the_measured_values_of_each_head():
    """Check a shared MLP on a frozen backbone's features drops 0.7 at lr 6e-4 by default, other heads
    (per-genre, linear, trained backbones) 0.5 at 3e-4, and a given value wins."""
    assert (TrainConfig().dropout_rate, TrainConfig().learning_rate) == (0.7, 6e-4)
    assert {key: TrainConfig().to_dict()[key] for key in ("dropout", "lr")} == {"dropout": 0.7, "lr": 6e-4}
    for other in (
        TrainConfig(mode="per-genre"),
        TrainConfig(head="linear"),
        TrainConfig(backbone="custom_cnn"),
        TrainConfig(fine_tune=1),
    ):
        assert (other.dropout_rate, other.learning_rate) == (0.5, 3e-4)
    assert (TrainConfig(dropout=0.2, lr=1e-3).dropout_rate, TrainConfig(lr=1e-3).learning_rate) == (0.2, 1e-3)
    assert train_multilabel(synthetic(60), synthetic(30), TrainConfig(epochs=1)).head.describe()["dropout"] == 0.7


def test_refit_is_refused_where_the_backbone_trains_and_off_there_by_default():
    """Check --refit with a trained backbone is an error, and the default refits heads on cached features only."""
    assert TrainConfig().refits and not TrainConfig(backbone="custom_cnn").refits
    assert not TrainConfig(refit=False).refits
    with pytest.raises(ValueError, match="drop --refit"):
        TrainConfig(backbone="custom_cnn", refit=True)


def test_train_preprocesses_as_the_features_command_does():
    """Check train's default input is the features command's (one cache), and --input-size and --resize apply."""
    from postergenre.features import default_preprocessing

    for backbone in ("efficientnet_lite0", "mobilenet_v2", "custom_cnn"):
        assert resolve_preprocessing(TrainConfig(backbone=backbone)) == default_preprocessing(backbone)
    assert resolve_preprocessing(TrainConfig()).input_size == (320, 224)
    assert resolve_preprocessing(TrainConfig(backbone="custom_cnn")).input_size == (300, 300)
    config = TrainConfig(resize="pad", input_size=(192, 128))
    assert resolve_preprocessing(config) == default_preprocessing("efficientnet_lite0").with_policy("pad", (192, 128))
    assert config.input_size == (192, 128)


def test_macro_auc_equals_scikit_learn_with_ties_and_single_class_genres():
    """Check that the ranked macro AUC equals scikit-learn's mean AUC, ties included, skipping one-class genres."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random((300, 5)) < [0.05, 0.2, 0.5, 0.0, 1.0]).astype(np.int8)
    scores = np.round(rng.random((300, 5)) + y * 0.3, 1)  # rounding makes many ties
    expected = np.mean([roc_auc_score(y[:, g], scores[:, g]) for g in range(3)])
    assert macro_auc(y, scores) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(macro_auc(y[:, 3:], scores[:, 3:]))


def test_byte_dropout_drops_at_its_rate_keeps_the_mean_and_is_off_in_eval():
    """Check ByteDropout drops about p of the units, scales the rest to keep the mean, and passes x in eval mode."""
    from postergenre.training.heads import ByteDropout

    torch.manual_seed(0)
    x = torch.ones(400, 500, requires_grad=True)
    dropout = ByteDropout(0.3).train()
    y = dropout(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - 77 / 256)) < 0.005  # round(0.3 * 256) = 77 of 256 bytes drop
    assert abs(y.mean().item() - 1.0) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient flows through the kept units only

    assert dropout.eval()(x) is x and ByteDropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        ByteDropout(1.0)


def test_heads_trained_side_by_side_equal_heads_trained_alone():
    """Check train_concurrently gives each head exactly the weights it gets alone, and restores torch's threads."""
    from postergenre.training.loop import train_concurrently
    from postergenre.training.per_genre import train_per_genre

    x, y = synthetic(500)
    data = {"a": ((x[:300], y[:300]), (x[300:], y[300:])), "b": ((x[:300] * 2, y[:300]), (x[300:] * 2, y[300:]))}
    config = TrainConfig(epochs=6, hidden=8, lr=1e-2, batch_size=64)
    trainers = {"a": train_multilabel, "b": train_per_genre}

    def jobs():
        return {name: (lambda name=name: trainers[name](*data[name], config)) for name in data}

    alone = {name: job() for name, job in jobs().items()}
    threads = torch.get_num_threads()
    side_by_side = train_concurrently(jobs())
    assert torch.get_num_threads() == threads
    for name in data:
        assert [row["val_macro_auc"] for row in side_by_side[name].history] == [
            row["val_macro_auc"] for row in alone[name].history
        ]
        for key, tensor in alone[name].head.state_dict().items():
            torch.testing.assert_close(side_by_side[name].head.state_dict()[key], tensor, rtol=0, atol=0)


def test_adamw_takes_the_steps_of_torchs_adamw():
    """Check that the heads' AdamW moves parameters as torch.optim.AdamW does, weight decay included."""
    from postergenre.training.optim import AdamW

    torch.manual_seed(0)
    ours, theirs = (create_head("mlp", 10, G, hidden=6, dropout=0.0) for _ in range(2))
    theirs.load_state_dict(ours.state_dict())
    x, y = torch.randn(32, 10), (torch.rand(32, G) < 0.3).float()
    start = {name: p.detach().clone() for name, p in ours.named_parameters()}
    optimizers = [
        AdamW(ours.parameters(), lr=3e-3, weight_decay=0.1),
        torch.optim.AdamW(theirs.parameters(), lr=3e-3, weight_decay=0.1),
    ]
    for _ in range(25):
        for head, optimizer in zip((ours, theirs), optimizers, strict=True):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        assert (a - start[name]).abs().max() > 1e-3, f"{name} did not move"
