"""Domain models: they learn the tiny dataset's visible classes, are cached by data hash, and
an interrupted training resumes to the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conditioning.dataset import load_dataset
from generation.evaluation import FitConfig, load_domain_models, train_domain_models
from generation.evaluation.fit import encode_targets, fit
from generation.evaluation.images import load_split, to_tensor
from generation.evaluation.networks import ConditionNet
from tests.conftest import make_tiny_dataset

FAST = FitConfig(epochs=3, batch_size=16, lr=3e-3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("eval") / "tiny", size=16, per_class=30)


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("dm") / "domain"
    return train_domain_models(tiny, out, FAST)


def test_classifier_beats_chance_and_saves_a_model_card(trained, tiny):
    card = (trained.directory / "MODEL_CARD.md").read_text()
    config = json.loads((trained.directory / "config.json").read_text())
    dataset = load_dataset(tiny)
    assert config["data_hash"] == dataset.content_hash()
    assert "trained by the radsynth project on its own data" in card.lower()
    assert dataset.content_hash() in card
    assert set(config["heads"]["categorical"]) == {"pathology"}
    assert config["heads"]["continuous"] == ["age_months"]
    test = config["metrics"]["test"]["pathology"]
    assert test["accuracy"] > 0.7  # chance is 1/3: the classes differ visibly
    assert "mae" in config["metrics"]["test"]["age_months"]
    assert not (trained.directory / "checkpoint").exists()


def test_predictions_have_probabilities_values_in_range_and_features(trained, tiny):
    images = load_split(load_dataset(tiny), "test")
    pred = trained.predict(images.images)
    probs = pred.probabilities["pathology"]
    assert probs.shape == (len(images), 3)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    ages = pred.values["age_months"]
    assert ((ages >= 0) & (ages <= 216)).all()
    assert pred.features.shape == (len(images), trained.model.feature_dim)
    reloaded = load_domain_models(trained.directory)
    assert (reloaded.predict(images.images).probabilities["pathology"] == probs).all()


def test_cached_when_data_and_recipe_match_retrained_otherwise(trained, tiny, tmp_path):
    weights = trained.directory / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = train_domain_models(tiny, trained.directory, FAST)
    assert weights.stat().st_mtime_ns == before
    assert again.data_hash == trained.data_hash
    other = make_tiny_dataset(tmp_path / "other", size=16, per_class=12, seed=5)
    retrained = train_domain_models(other, tmp_path / "domain", FitConfig(epochs=1, batch_size=16))
    assert retrained.data_hash == load_dataset(other).content_hash() != trained.data_hash


def test_load_rejects_a_directory_without_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_domain_models(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a RadSynth domain-model config"):
        load_domain_models(tmp_path)


def test_interrupted_training_resumes_to_the_same_weights(tiny, tmp_path):
    dataset = load_dataset(tiny)
    train = load_split(dataset, "train")
    images = to_tensor(train.images)
    targets = encode_targets(train.conditions, dataset.schema, ["pathology"])
    config = FitConfig(epochs=3, batch_size=16, seed=3)

    def fresh():
        torch.manual_seed(0)
        return ConditionNet({"pathology": 3})

    reference = fresh()
    fit(reference, images, targets, config)

    class Stop(Exception):
        pass

    def stop_after_two(epoch, _entry):  # called after the epoch checkpoint
        if epoch == 2:
            raise Stop

    interrupted = fresh()
    with pytest.raises(Stop):
        fit(interrupted, images, targets, config, work_dir=tmp_path / "ck", progress=stop_after_two)
    resumed = fresh()
    trained = []
    history = fit(
        resumed,
        images,
        targets,
        config,
        work_dir=tmp_path / "ck",
        progress=lambda epoch, _entry: trained.append(epoch),
    )
    assert trained == [3]  # epochs 1 and 2 came from the checkpoint
    assert [h["epoch"] for h in history["history"]] == [1, 2, 3]
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
