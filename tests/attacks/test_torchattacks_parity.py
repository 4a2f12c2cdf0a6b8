"""Parity with torchattacks 3.5: capjax's attacks against their torchattacks ports, run on a
weight-copied PyTorch twin of the same trained model (`capjax.bench.torch_twins`).

The model is the shape users bring, a CNN with max pooling (`MaxPoolCNN`, widths 16 and 32),
trained for 300 Adam steps on capjax's synthetic shapes (about 55% clean accuracy on the 64
test images attacked, as a briefly trained user model; its head bias shifted so that every
logit is positive, see `trained_model`), attacked at L-inf eps 1/255, where PGD-10 leaves
about 30% robust (so a verdict can go either way).

- Deterministic attacks (FGSM, PGD without random start, MI-FGSM) must give the same
  adversarial images, up to the odd pixel where a gradient component near zero takes the
  other sign in float32, and the same verdict on every image.
- Randomised attacks (APGD-CE, APGD-T, FAB-T, Square, and AutoAttack standard with 20
  iterations per gradient component and 1,000 Square queries) draw different random
  numbers in the two libraries, so they must agree on robust accuracy within
  `PAIRED_TOLERANCE` images.
- CW-L2 with capjax's `torchattacks` preset must break the same images, at a median L2 size
  within 1% (both run Adam on the tanh-space variable; float rounding moves a few pixels
  apart).

torch and torchattacks are optional (`pip install -e '.[bench]'`; the CPU wheel of torch
comes from https://download.pytorch.org/whl/cpu) and absent in CI, which has no network to
install them, so this module skips there.
"""

from __future__ import annotations

import numpy as np
import pytest

from capjax.attacks import (
    apgd,
    apgd_t,
    autoattack,
    cw_l2,
    fab,
    fgsm,
    flax_logits_fn,
    mifgsm,
    pgd,
    square,
)
from capjax.attacks.minimal_norm import CW_L2_PRESETS
from capjax.bench import compare, compare_autoattack

mods, why = compare.load_peer("torchattacks")
if mods is None:
    pytest.skip(why, allow_module_level=True)

import jax  # noqa: E402

from capjax.bench.torch_twins import checked_twin  # noqa: E402

EPS = 1 / 255
BATCH = 64
# Randomised attacks: the robust counts of the two libraries may differ by this many images
# of BATCH. Measured on the 2-core dev machine (2026-12-05): see docs/fidelity.md.
PAIRED_TOLERANCE = 2
LOGIT_SHIFT = 20.0  # see `trained_model`


def trained_model():
    """(model, variables, x, y): a MaxPoolCNN after 300 Adam steps on synthetic shapes, and
    the first 64 synthetic test images with their true labels."""
    import optax

    from capjax.bench.user_models import MaxPoolCNN
    from capjax.data.dataset import load_dataset

    data = load_dataset("synthetic", num_train=2048, num_test=BATCH, seed=0)
    images = jax.numpy.asarray(data.train_images, jax.numpy.float32) / 255
    labels = jax.numpy.asarray(data.train_labels)
    model = MaxPoolCNN(num_classes=data.num_classes, widths=(16, 32))
    variables = model.init(jax.random.key(0), images[:1])
    tx = optax.adam(3e-3)

    @jax.jit
    def step(variables, opt_state, x, y):
        def loss(v):
            logits = model.apply(v, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        updates, opt_state = tx.update(jax.grad(loss)(variables), opt_state, variables)
        return optax.apply_updates(variables, updates), opt_state

    opt_state = tx.init(variables)
    rows = np.random.default_rng(0).integers(0, images.shape[0], (300, 64))
    for batch in rows:
        variables, opt_state = step(variables, opt_state, images[batch], labels[batch])
    # Every logit positive: torchattacks 3.5.1's CW takes the largest other logit as
    # max((1 - one_hot) * logits), which reads the true class's slot as 0, so wherever all
    # other logits are negative it sees the image as already fooled and never moves it (here
    # it left 24 of the 64 images untouched). A common shift changes no softmax, margin or
    # decision, so every other attack is unaffected.
    head = dict(variables["params"]["head"])
    head["bias"] = head["bias"] + LOGIT_SHIFT
    variables = {**variables, "params": {**variables["params"], "head": head}}
    x = jax.numpy.asarray(data.test_images, jax.numpy.float32) / 255
    return model, variables, x, jax.numpy.asarray(data.test_labels, jax.numpy.int32)


@pytest.fixture(scope="module")
def setting():
    torch = mods.torch
    torch.manual_seed(0)
    model, variables, x, y = trained_model()
    twin, _, _ = checked_twin(torch, model, variables, x, "cpu")
    logits_fn = flax_logits_fn(model, variables, train=False)
    images = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    labels = torch.from_numpy(np.asarray(y).astype(np.int64))

    def torchattacks_run(attack) -> np.ndarray:
        return attack(images, labels).detach().numpy().transpose(0, 2, 3, 1)

    def robust(x_adv) -> np.ndarray:
        return np.asarray(logits_fn(jax.numpy.asarray(x_adv))).argmax(-1) == np.asarray(y)

    return logits_fn, x, y, twin, torchattacks_run, robust


def assert_same_images(mine, theirs, robust):
    mine, theirs = np.asarray(mine), np.asarray(theirs)
    differing = np.mean(np.abs(mine - theirs) > 1e-6)
    assert differing < 0.01, f"{differing:.2%} of pixels differ"
    np.testing.assert_array_equal(robust(mine), robust(theirs))
    assert 0 < robust(mine).sum() < BATCH  # the verdicts were not foregone


def test_fgsm_matches(setting):
    logits_fn, x, y, twin, run, robust = setting
    theirs = run(mods.torchattacks.FGSM(twin, eps=EPS))
    assert_same_images(fgsm(logits_fn, x, y, eps=EPS), theirs, robust)


def test_pgd_without_random_start_matches(setting):
    logits_fn, x, y, twin, run, robust = setting
    ta = mods.torchattacks.PGD(twin, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)
    mine = pgd(
        logits_fn, x, y, eps=EPS, step_size=EPS / 4, steps=10,
        random_start=False, best_iterate=False,
    )  # fmt: skip
    assert_same_images(mine, run(ta), robust)


def test_mifgsm_matches(setting):
    logits_fn, x, y, twin, run, robust = setting
    ta = mods.torchattacks.MIFGSM(twin, eps=EPS, alpha=EPS / 10, steps=10, decay=1.0)
    mine = mifgsm(logits_fn, x, y, eps=EPS, step_size=EPS / 10, steps=10, best_iterate=False)
    assert_same_images(mine, run(ta), robust)


def test_cw_l2_torchattacks_preset_matches(setting):
    logits_fn, x, y, twin, run, robust = setting
    preset = CW_L2_PRESETS["torchattacks"]
    ta = mods.torchattacks.CW(
        twin, c=preset["initial_const"], kappa=preset["confidence"],
        steps=preset["steps"], lr=preset["learning_rate"],
    )  # fmt: skip
    theirs = run(ta)
    mine = np.asarray(cw_l2(logits_fn, x, y, **preset))
    np.testing.assert_array_equal(robust(mine), robust(theirs))
    broken = ~robust(theirs) & robust(x)  # the L2 sizes of the images CW had to move
    assert broken.any()

    def l2(x_adv):
        return np.linalg.norm((x_adv - np.asarray(x)).reshape(BATCH, -1), axis=1)[broken]

    assert np.median(l2(mine)) == pytest.approx(np.median(l2(theirs)), rel=0.01)


# AutoAttack standard with 20 iterations per gradient component and 1,000 Square queries, as
# `torchattacks_standard(..., steps=20)` builds it with `short_square` applied.
SHORT_AUTOATTACK = {name: {"steps": 20} for name in ("apgd-ce", "apgd-t", "fab-t")}
SHORT_AUTOATTACK["square"] = {"steps": 1000}


def short_square(multi):
    multi.attacks[-1].n_queries = 1000
    return multi


def randomized_cases():
    ta = mods.torchattacks
    common = {"norm": "Linf", "eps": EPS, "seed": 0, "n_restarts": 1}
    return {
        "apgd_ce": (
            lambda f, x, y, key: apgd(f, x, y, eps=EPS, steps=20, key=key),
            lambda twin: ta.APGD(twin, steps=20, loss="ce", **common),
        ),
        "apgd_t": (
            lambda f, x, y, key: apgd_t(f, x, y, eps=EPS, steps=20, key=key),
            lambda twin: ta.APGDT(twin, steps=20, n_classes=10, **common),
        ),
        "fab_t": (
            lambda f, x, y, key: fab(f, x, y, eps=EPS, steps=20, key=key),
            lambda twin: ta.FAB(twin, steps=20, multi_targeted=True, n_classes=10, **common),
        ),
        "square": (
            lambda f, x, y, key: square(
                f, x, y, eps=EPS, steps=1000, key=key, rescale_schedule=False
            ),
            lambda twin: ta.Square(twin, n_queries=1000, p_init=0.8, resc_schedule=False, **common),
        ),
        "autoattack": (
            lambda f, x, y, key: autoattack(f, x, y, eps=EPS, key=key, options=SHORT_AUTOATTACK),
            lambda twin: short_square(
                compare_autoattack.torchattacks_standard(mods, twin, EPS, 10, steps=20)
            ),
        ),
    }


@pytest.mark.parametrize("name", ["apgd_ce", "apgd_t", "fab_t", "square", "autoattack"])
def test_randomized_attacks_agree_on_robust_accuracy(setting, name):
    logits_fn, x, y, twin, run, robust = setting
    capjax_attack, torchattacks_attack = randomized_cases()[name]
    mine = robust(capjax_attack(logits_fn, x, y, jax.random.key(0)))
    theirs = robust(run(torchattacks_attack(twin)))
    assert abs(int(mine.sum()) - int(theirs.sum())) <= PAIRED_TOLERANCE, (
        f"{name}: capjax leaves {mine.sum()} of {BATCH} robust, torchattacks {theirs.sum()}"
    )
