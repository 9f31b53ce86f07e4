"""The real + synthetic training recipes on tiny data: what each one does to the training set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conditioning.dataset import load_dataset
from generation.evaluation.fit import (
    FitConfig,
    Targets,
    adversary_strength,
    encode_targets,
    fit,
    reversed_gradient,
)
from generation.evaluation.images import ImageSet, load_split, to_tensor
from generation.evaluation.recipes import (
    RECIPES,
    new_classifier,
    origin_class_weights,
    predict,
    screen,
    train_classifier,
    train_with_recipe,
)
from generation.evaluation.utility import score
from tests.conftest import make_tiny_dataset

FIT = FitConfig(epochs=3, batch_size=16, lr=3e-3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    data = load_dataset(make_tiny_dataset(root / "tiny", size=16, per_class=30))
    other = load_split(
        load_dataset(make_tiny_dataset(root / "o", size=16, per_class=20, seed=9)), "train"
    )
    return data, load_split(data, "train"), load_split(data, "test"), other


def test_origin_class_weights_make_the_origin_carry_no_label():
    labels = ["a"] * 90 + ["b"] * 10 + ["a"] * 20 + ["b"] * 20
    origins = ["real"] * 100 + ["synthetic"] * 40
    w = origin_class_weights(labels, origins)
    assert w.mean() == pytest.approx(1.0)
    total = {}
    for weight, key in zip(w, zip(origins, labels, strict=True), strict=True):
        total[key] = total.get(key, 0.0) + weight
    # within each origin the classes weigh the same: the origin says nothing about the label
    assert total[("real", "a")] == pytest.approx(total[("real", "b")])
    assert total[("synthetic", "a")] == pytest.approx(total[("synthetic", "b")])
    # each origin weighs what its image count does: a small synthetic set is not inflated
    assert total[("real", "a")] + total[("real", "b")] == pytest.approx(100)
    assert total[("synthetic", "a")] + total[("synthetic", "b")] == pytest.approx(40)


def test_filter_drops_synthetic_images_of_the_wrong_class_or_off_the_real_manifold(tiny):
    data, train, _, other = tiny
    judge = train_classifier(train, data.schema, "pathology", FIT)
    wrong = ImageSet(other.images, [dict(c) for c in other.conditions], other.ids)
    for c in wrong.conditions[::2]:  # half of them mislabelled
        c["pathology"] = {"normal": "viral", "bacterial": "normal", "viral": "bacterial"}[
            c["pathology"]
        ]
    # and images the judge does put in their class, but that look like no real image: noise
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 1, (12, *train.images.shape[1:])).astype(np.float32)
    classes = data.schema["pathology"].values
    guessed = predict(judge, ImageSet(noise, [{}] * 12, [""] * 12), "pathology", 16).argmax(1)
    offered = ImageSet(
        np.concatenate([wrong.images, noise]),
        wrong.conditions + [{"pathology": classes[g]} for g in guessed],
        wrong.ids + [f"noise{i}" for i in range(12)],
    )
    right = set(wrong.ids[1::2])
    plain, plain_report = screen(offered, judge, train, data.schema, "pathology")
    assert plain_report["off_manifold"] == 0  # without the manifold rule only the class counts
    assert set(wrong.ids[::2]).isdisjoint(plain.ids)
    assert {f"noise{i}" for i in range(12)} <= set(plain.ids)  # the class rule lets noise pass
    kept, report = screen(offered, judge, train, data.schema, "pathology", manifold=True)
    assert set(kept.ids) <= right  # none of the mislabelled ones, no noise image survives
    assert len(kept) >= 0.5 * len(right)  # most correct ones do
    assert report["wrong_class"] >= len(wrong.ids[::2])
    assert report["off_manifold"] >= 12  # the noise: right class by construction, off-manifold
    assert report["offered"] == len(offered) and report["kept"] == len(kept)
    assert report["wrong_class"] + report["off_manifold"] + report["kept"] == len(offered)
    trained = train_with_recipe(
        RECIPES["filter-manifold"], train, offered, data.schema, "pathology", FIT, judge=judge
    )
    assert trained.info["n_synthetic_used"] == len(kept)
    assert trained.info["filtered_share"] == pytest.approx(1 - len(kept) / len(offered))
    assert trained.info["filter"] == report


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_trains_a_classifier_that_works_on_real_test_images(tiny, name):
    data, train, test, other = tiny
    recipe = RECIPES[name]
    # the signature recipe's stand-in autoencoder: a slight blur of the real images
    extra = {"signature": lambda x: (x + np.roll(x, 1, axis=-1)) / 2} if recipe.signature else {}
    trained = train_with_recipe(recipe, train, other, data.schema, "pathology", FIT, **extra)
    scores = score(trained.model, test, data.schema, "pathology", 16)
    assert scores["macro_auroc"] > 0.8
    assert trained.info["recipe"]["name"] == name
    again = train_with_recipe(recipe, train, other, data.schema, "pathology", FIT, **extra)
    assert np.array_equal(  # same data and seed: the same classifier
        score(again.model, test, data.schema, "pathology", 16)["probabilities"],
        scores["probabilities"],
    )


def test_signature_recipe_needs_the_autoencoder(tiny):
    data, train, _, other = tiny
    with pytest.raises(ValueError, match="needs the generator's autoencoder"):
        train_with_recipe(RECIPES["signature"], train, other, data.schema, "pathology", FIT)


def test_the_adversary_pushes_the_features_against_telling_the_origins_apart():
    """The reversed gradient is the adversary's gradient turned round and scaled, and its scale
    rises from 0 (the label heads learn first) to the recipe's weight."""
    x = torch.randn(5, 3, requires_grad=True)
    (reversed_gradient(x, 0.3) * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(5, 3))
    assert adversary_strength(0.3, 0.0) == 0.0
    assert adversary_strength(0.3, 0.5) == pytest.approx(0.3 * 0.9866, abs=1e-4)
    assert adversary_strength(0.3, 1.0) == pytest.approx(0.3, abs=1e-4)


def test_an_adversary_of_weight_zero_changes_nothing_and_one_resumes(tiny, tmp_path):
    """Origins with weight 0 train the very same classifier as none; with a weight, a run
    interrupted after an epoch resumes (adversary included) to the uninterrupted weights."""
    data, train, _, other = tiny
    images = to_tensor(np.concatenate([train.images, other.images]))
    conditions = train.conditions + other.conditions
    origins = torch.tensor([0] * len(train) + [1] * len(other))

    def trained(weight, work_dir=None, domains=origins, progress=None):
        targets = encode_targets(conditions, data.schema, ["pathology"])
        targets = Targets(targets.tensors, domains=domains, domain_weight=weight)
        model = new_classifier(3, "pathology", FIT)
        fit(model, images, targets, FIT, work_dir=work_dir, progress=progress)
        return model.state_dict()

    plain = trained(0.0, domains=None)
    assert all(torch.equal(plain[k], v) for k, v in trained(0.0).items())
    adversarial = trained(1.0)
    assert not all(torch.equal(plain[k], v) for k, v in adversarial.items())

    def crash_after_first_epoch(epoch, entry):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trained(1.0, tmp_path / "run", progress=crash_after_first_epoch)
    assert (tmp_path / "run" / "adversary.safetensors").is_file()
    resumed = trained(1.0, tmp_path / "run")
    assert all(torch.equal(adversarial[k], v) for k, v in resumed.items())
