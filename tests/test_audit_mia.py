"""Membership inference of the audit with constructed model probes (the real model is
attacked the same way through generation.load_model): a memorising probe is caught, an
honest one is not, and the probe's answers are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privacy_audit import membership


class LossProbe:
    """Lower loss on the images it 'remembers' (by pixel hash), by `strength`."""

    num_train_timesteps = 100

    def __init__(self, remembered: np.ndarray, strength: float):
        self.keys = {image.tobytes() for image in remembered.astype(np.float32)}
        self.strength = strength
        self.calls: list[tuple[int, list[int], int]] = []

    def denoising_error(self, images01, conditions, timesteps, seed):
        assert len(conditions) == len(images01)
        self.calls.append((len(images01), list(timesteps), seed))
        rng = np.random.default_rng([seed, len(images01)])
        base = rng.uniform(0.5, 1.5, (len(images01), len(timesteps)))
        member = np.array([im.astype(np.float32).tobytes() in self.keys for im in images01])
        return base * np.where(member, 1.0 - self.strength, 1.0)[:, None]


class StepwiseProbe(LossProbe):
    def stepwise_error(self, images01, conditions, timesteps, seed):
        return self.denoising_error(images01, conditions, timesteps, seed) ** 2


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    members = rng.random((n, 8, 8), dtype=np.float32)
    nonmembers = rng.random((n, 8, 8), dtype=np.float32)
    conditions = [{"pathology": "normal"}] * n
    return members, nonmembers, conditions


def test_memorising_model_is_caught_with_intervals():
    members, nonmembers, cond = _data()
    probe = StepwiseProbe(members, strength=0.6)
    result = membership.model_attack(
        probe,
        members,
        cond,
        nonmembers,
        cond,
        [5, 10, 20],
        membership.AttackSettings(n_boot=200, batch=50),
    )
    assert set(result["attacks"]) == {"loss", "stepwise"}
    loss = result["attacks"]["loss"]
    assert loss["auc"] > 0.95 and loss["auc_ci95"][0] > 0.9
    assert loss["tpr_at_1pct_fpr"] > 0.5 and loss["tpr_at_1pct_fpr_ci95"][0] > 0.05
    assert set(loss["auc_per_timestep"]) == {"5", "10", "20"}
    assert loss["roc"]["fpr"][0] == 0.0 and loss["roc"]["tpr"][-1] == 1.0
    # members and non-members are scored in equal batches with the same noise seeds
    seeds = [c[2] for c in probe.calls]
    assert seeds[: len(seeds) // 4] == seeds[len(seeds) // 4 : len(seeds) // 2]


def test_honest_model_is_not_accused():
    members, nonmembers, cond = _data(seed=1)
    result = membership.model_attack(
        LossProbe(members, 0.0),
        members,
        cond,
        nonmembers,
        cond,
        [5, 10],
        membership.AttackSettings(n_boot=200),
    )
    loss = result["attacks"]["loss"]
    assert set(result["attacks"]) == {"loss"}
    assert loss["auc_ci95"][0] < 0.5 < loss["auc_ci95"][1]
    assert loss["tpr_at_1pct_fpr_ci95"][0] <= 0.05


def test_a_probe_answering_the_wrong_shape_is_refused():
    members, nonmembers, cond = _data(n=10)

    class Broken(LossProbe):
        def denoising_error(self, images01, conditions, timesteps, seed):
            return np.zeros((len(images01), 1))

    with pytest.raises(ValueError, match=r"shape \(10, 1\), expected \(10, 2\)"):
        membership.model_attack(Broken(members, 0), members, cond, nonmembers, cond, [1, 2])
    assert isinstance(LossProbe(members, 0), membership.DiffusionModelProbe)
    assert not isinstance(object(), membership.DiffusionModelProbe)


def _unit(x):
    return torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)


def test_dcr_share_is_half_for_fresh_data_and_high_for_copies():
    rng = np.random.default_rng(3)
    train, holdout = _unit(rng.normal(size=(2000, 16))), _unit(rng.normal(size=(300, 16)))
    fresh = _unit(rng.normal(size=(400, 16)))
    copies = _unit(train[:400].numpy() + 0.05 * rng.normal(size=(400, 16)))
    ok = membership.dcr(fresh, train, holdout, n_boot=200)
    assert ok["share_ci95"][0] < 0.5 < ok["share_ci95"][1]
    assert ok["reference_size"] == 300  # train subsampled to the holdout's size
    bad = membership.dcr(copies, train[:400], holdout, n_boot=200)
    assert bad["share_closer_to_train"] > 0.6  # each subsample holds 3/4 of the sources
    assert bad["share_ci95"][0] > 0.6


def test_domias_detects_a_set_concentrated_on_training_images():
    rng = np.random.default_rng(4)
    train, holdout = _unit(rng.normal(size=(600, 8))), _unit(rng.normal(size=(600, 8)))
    leaky = _unit(train[:300].numpy() + 0.05 * rng.normal(size=(300, 8)))
    fresh = _unit(rng.normal(size=(300, 8)))
    assert membership.domias(leaky, train, holdout, n_boot=100)["auc"] > 0.6
    honest = membership.domias(fresh, train, holdout, n_boot=100)
    assert honest["auc_ci95"][0] < 0.5 < honest["auc_ci95"][1]


def test_the_tpr_at_1pct_fpr_decides_only_with_enough_non_members():
    """With fewer than TPR_NONMEMBERS non-members a 1% FPR allows no false positive, and chance
    alone puts a member above every non-member about half the time: the TPR check then fails
    no audit (the AUC still can), while the same figures with enough non-members do."""
    from privacy_audit.audit import AuditConfig, _attack_checks
    from privacy_audit.report import Attack, Roc

    def attack(n: int, auc_lo: float = 0.4) -> Attack:
        return Attack(
            auc=0.62,
            auc_ci95=(auc_lo, 0.84),
            tpr_at_1pct_fpr=0.25,
            tpr_at_1pct_fpr_ci95=(0.083, 0.4),
            members=n,
            nonmembers=n,
            roc=Roc(fpr=(0.0, 1.0), tpr=(0.0, 1.0)),
        )

    config = AuditConfig()
    few, many = (_attack_checks(config, attack(n), None)[0] for n in (12, 200))
    assert few.passed and not many.passed
    assert "not decisive: 12 non-members" in few.detail
    assert "limit 0.05" in many.detail
    assert not _attack_checks(config, attack(12, auc_lo=0.7), None)[0].passed
    # chance alone: 12 members against 12 non-members from one distribution, 200 draws
    rng = np.random.default_rng(0)
    above = [rng.random(12).max() > rng.random(12).max() for _ in range(200)]
    assert 0.4 < np.mean(above) < 0.6
