"""Feature-space attacks: PGD on a feature distance, and CAFD's class activation feature attack.

`feature_pgd` maximises the distance between the features of `x_adv` and those of the clean
`x` inside an L-inf or L2 ball; it needs no labels. `cafa` is CAFD's attack (Zhou et al., ICCV
2021, Section 3.2 and Algorithm 1): `feature_pgd` on the *class activation features* of a
classifier, with the paper's and the authors' code's defaults.

Class activation features, after CAM (Zhou et al., CVPR 2016): for the last convolutional
feature map F (N, h, w, C) that the classifier's head pools, and the head's kernel
W (C, num_classes), the class activation features of class c are the channels weighted by
the class's weights, phi^k = F^k * W[k, c] (the paper's Phi_x = F_x . W_x), and the class
activation map (CAM) is their sum over channels. Both are provided:
`class_activation_features` (N, H, W, C) and `class_activation_maps` (N, H, W).

Facts taken from the authors' public code (dwDavidxd/CAFD, `example_cam.py`: `CAM_tensor`,
`cam_criteria`; `utils/cam_pgd_attack.py`), which the paper leaves out:
- The attacked representation is the per-channel weighted features, *not* their channel sum:
  `CAM_tensor` multiplies the features by the predicted class's FC weight row and leaves the
  channel sum commented out. This matches the paper's Phi_x = [phi^1, ..., phi^K] and Eq. 7,
  which splits the distance into a feature and a class-weight term. Hence `cafa`'s default
  representation is `kind="features"`; `kind="map"` gives the summed CAM of Figure 1.
- ReLU is applied to the weighted features, the result is min-max normalised over the whole
  batch (`normalize="batch"`; per image is the sound choice and capjax's default, because a
  batch-wide normalisation makes each example's attack depend on the rest of the batch) and
  bilinearly upsampled to the 32x32 input size (`size="input"`).
- The loss is the mean squared error between the maps of x_adv and of x (the paper's Eq. 1
  names an L2 distance; with per-image normalisation each example's MSE is a monotone
  function of its L2 distance, so sign-gradient steps are the same for both), maximised
  by L-inf PGD with eps = 8/255, step 0.01, 100 iterations and a uniform random start (the
  paper's Algorithm 1 starts at x, where the distance and its gradient are zero, so without
  a random start the first step only follows round-off: see `feature_pgd`). Labels are not used.
- Both maps use the class each image is *predicted* as: the map of x uses argmax f(x); the map
  of x_adv uses argmax f(x_adv), re-evaluated at every iteration (`CAM_tensor.__call__` takes
  the argmax of the logits of whatever input it is given, and `cam_criteria` calls it on x_adv
  and on x). The argmax carries no gradient. The paper agrees: Section 3.2 defines W_x by the
  predicted class c_x of x, and Eq. 7 compares W_x with the weights of the restored image.
- The authors hook the output of the last `nn.Conv2d` module (before its BatchNorm) and
  min-max normalise before upsampling; capjax's default is the feature map the head pools
  (the classifier's `return_features=True` output), which is CAM's definition, normalised
  after upsampling. Both of the authors' choices are options: `normalize_order` here, and
  the feature source in `capjax.defenses.purifier_parts.frozen_target_fn` (`feature_source`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from capjax.attacks._common import (
    attack_loop,
    check_attack_inputs,
    check_nonnegative,
    input_gradient,
    normalize_direction,
    project,
    random_init,
    require_key,
)

DISTANCES = ("mse", "l2")
NORMALIZATIONS = ("per_image", "batch", None)
KINDS = ("features", "map")
# When the min-max normalisation happens relative to the bilinear upsampling: capjax's
# default normalises the upsampled maps; the authors' code normalises the feature-resolution
# maps, then upsamples.
NORMALIZE_ORDERS = ("after_upsampling", "before_upsampling")
# Min-max normalisation divides by max(range, NORMALIZE_FLOOR): a constant map (e.g. all zero
# after the ReLU, when no feature supports the predicted class) becomes 0 instead of NaN,
# while any map with a real range still reaches 1 (to within an ulp) at its maximum. (The
# authors' code divides without a guard.)
NORMALIZE_FLOOR = 1e-12

Size = tuple[int, int] | str | None


def _check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {tuple(choices)}.")


def _min_max_normalize(maps: jax.Array, normalize: str | None) -> jax.Array:
    """Min-max normalises (N, ...) maps per example ("per_image") or over all ("batch")."""
    if normalize is None:
        return maps
    axes = tuple(range(1, maps.ndim)) if normalize == "per_image" else None
    lo = jnp.min(maps, axis=axes, keepdims=True)
    hi = jnp.max(maps, axis=axes, keepdims=True)
    # XLA rewrites division by a broadcast range as multiplication by its reciprocal, which
    # can land one ulp outside [0, 1]; the clip restores the range. (At the clip's bounds the
    # exact normalised value is constant, so its gradient is unaffected.)
    return jnp.clip((maps - lo) / jnp.maximum(hi - lo, NORMALIZE_FLOOR), 0, 1)


def _finish(
    maps: jax.Array,
    size: tuple[int, int] | None,
    normalize: str | None,
    normalize_order: str = "after_upsampling",
) -> jax.Array:
    """Bilinear upsampling of (N, h, w, ...) maps to `size` and min-max normalisation, in
    `normalize_order`.

    The authors normalise before upsampling ("before_upsampling"). Bilinear interpolation
    preserves affine maps, so the two orders differ only in which extremes set the scale;
    normalising last ("after_upsampling", capjax's default) makes every non-constant map span
    [0, 1] (its minimum exactly 0, its maximum 1 to within an ulp), where upsampling after
    the normalisation usually leaves the maximum below 1.
    """
    _check_choice("normalize", normalize, NORMALIZATIONS)
    _check_choice("normalize_order", normalize_order, NORMALIZE_ORDERS)
    if normalize_order == "before_upsampling":
        maps = _min_max_normalize(maps, normalize)
    if size is not None:
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (height, width) or None, got {size}.")
        # jax.image.resize only touches dims whose size changes, i.e. (h, w); its bilinear
        # kernel with half-pixel centres is PyTorch's interpolate(..., align_corners=False).
        maps = jax.image.resize(maps, maps.shape[:1] + size + maps.shape[3:], "bilinear")
    if normalize_order == "after_upsampling":
        maps = _min_max_normalize(maps, normalize)
    return maps


def _class_weighted(features: jax.Array, head_kernel: jax.Array, classes: jax.Array):
    """(N, h, w, C) features times the head-kernel column of each example's class, float32."""
    if features.ndim != 4:
        raise ValueError(f"features must have shape (N, h, w, C), got {tuple(features.shape)}.")
    if head_kernel.ndim != 2 or head_kernel.shape[0] != features.shape[-1]:
        raise ValueError(
            f"head_kernel must have shape (C, num_classes) with C = {features.shape[-1]} "
            f"feature channels, got {tuple(head_kernel.shape)}."
        )
    if classes.shape != features.shape[:1] or not jnp.issubdtype(classes.dtype, jnp.integer):
        raise ValueError(
            f"classes must be (N,) = ({features.shape[0]},) integers, got shape "
            f"{tuple(classes.shape)} and dtype {classes.dtype}."
        )
    dtype = jnp.promote_types(features.dtype, jnp.float32)
    weights = jnp.take(head_kernel.astype(dtype), classes, axis=1).T  # (N, C)
    return features.astype(dtype) * weights[:, None, None, :]


def class_activation_features(
    features: jax.Array,
    head_kernel: jax.Array,
    classes: jax.Array,
    *,
    size: tuple[int, int] | None = None,
    normalize: str | None = "per_image",
    normalize_order: str = "after_upsampling",
) -> jax.Array:
    """CAFD's class activation features: ReLU(features * head_kernel[:, class]) per channel.

    Args:
      features: (N, h, w, C) last convolutional feature map (the map the head pools).
      head_kernel: (C, num_classes) kernel of the classifier's final linear layer.
      classes: (N,) int, the class whose weights each example uses.
      size: (H, W) to upsample to bilinearly, or None to keep (h, w).
      normalize: min-max normalisation "per_image" (over h, w and C), "batch" (over
        everything; the authors' code) or None. See `NORMALIZE_FLOOR` for constant maps.
      normalize_order: "after_upsampling" (default) or "before_upsampling" (the authors').

    Returns:
      (N, H, W, C) float32 (at least); in [0, 1] when normalised.
    """
    weighted = _class_weighted(features, head_kernel, classes)
    return _finish(jax.nn.relu(weighted), size, normalize, normalize_order)


def class_activation_maps(
    features: jax.Array,
    head_kernel: jax.Array,
    classes: jax.Array,
    *,
    size: tuple[int, int] | None = None,
    normalize: str | None = "per_image",
    normalize_order: str = "after_upsampling",
) -> jax.Array:
    """Class activation maps (Zhou et al., 2016): ReLU(sum_c features[..., c] * W[c, class]).

    Args: as `class_activation_features`.

    Returns:
      (N, H, W) float32 (at least); in [0, 1] when normalised, with minimum 0 and maximum 1
      (to within an ulp) for every non-constant map under "per_image".
    """
    weighted = _class_weighted(features, head_kernel, classes)
    return _finish(jax.nn.relu(jnp.sum(weighted, axis=-1)), size, normalize, normalize_order)


def class_activation_features_fn(
    logits_and_features_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    head_kernel: jax.Array,
    *,
    kind: str = "features",
    size: Size = "input",
    normalize: str | None = "per_image",
    normalize_order: str = "after_upsampling",
) -> Callable[[jax.Array], jax.Array]:
    """Returns `x -> class activation features (or map) of each image's predicted class`.

    The predicted class is argmax of the logits of the very image passed in, with no gradient,
    as in CAFA (see the module docstring).

    Args:
      logits_and_features_fn: x (N, H, W, C) -> (logits (N, K), features (N, h, w, C')), e.g.
        `lambda x: model.apply(variables, x, return_features=True)` for a capjax classifier.
      head_kernel: (C', K) kernel of the final linear layer (`variables["params"]["head"]
        ["kernel"]` in capjax's zoo).
      kind: "features" for `class_activation_features` (CAFD's default) or "map" for
        `class_activation_maps`.
      size: "input" to upsample to the input's (H, W) (the authors: 32x32), an (H, W) tuple,
        or None for the feature map's own resolution.
      normalize: "per_image", "batch" (the authors' code) or None.
      normalize_order: "after_upsampling" (default) or "before_upsampling" (the authors').
    """
    _check_choice("kind", kind, KINDS)
    _check_choice("normalize", normalize, NORMALIZATIONS)
    _check_choice("normalize_order", normalize_order, NORMALIZE_ORDERS)
    if not (size is None or size == "input" or (isinstance(size, Sequence) and len(size) == 2)):
        raise ValueError(f"size must be 'input', (height, width) or None, got {size!r}.")
    compute = class_activation_features if kind == "features" else class_activation_maps

    def class_activation_fn(x: jax.Array) -> jax.Array:
        logits, features = logits_and_features_fn(x)
        classes = jnp.argmax(jax.lax.stop_gradient(logits), axis=-1)
        out_size = tuple(x.shape[1:3]) if size == "input" else size
        return compute(
            features,
            head_kernel,
            classes,
            size=out_size,
            normalize=normalize,
            normalize_order=normalize_order,
        )

    return class_activation_fn


def zoo_class_activation_fn(
    model: Any,
    variables: Any,
    *,
    kind: str = "features",
    size: Size = "input",
    normalize: str | None = "per_image",
) -> Callable[[jax.Array], jax.Array]:
    """`class_activation_features_fn` for a capjax zoo classifier, in inference mode.

    Relies on the zoo's conventions: `model.apply(variables, x, train=False,
    return_features=True)` returns (logits, features) and the final layer is named `head`.
    Batch statistics are only read, never updated.
    """
    kernel = variables["params"]["head"]["kernel"]
    apply = lambda x: model.apply(variables, x, train=False, return_features=True)
    return class_activation_features_fn(apply, kernel, kind=kind, size=size, normalize=normalize)


def feature_distance(a: jax.Array, b: jax.Array, distance: str = "mse") -> jax.Array:
    """Per-example distance between (N, ...) feature arrays: "mse" (mean square) or "l2".

    Computed in float32 at least. The L2 norm's gradient at zero distance is taken as zero
    (instead of NaN) so that attacks starting at x do not produce NaNs.
    """
    _check_choice("distance", distance, DISTANCES)
    dtype = jnp.promote_types(jnp.result_type(a, b), jnp.float32)
    diff = jnp.reshape(a.astype(dtype) - b.astype(dtype), (a.shape[0], -1))
    if distance == "mse":
        return jnp.mean(jnp.square(diff), axis=-1)
    squared = jnp.sum(jnp.square(diff), axis=-1)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def feature_pgd(
    features_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    *,
    eps: Any,
    step_size: Any,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    key: jax.Array | None = None,
    distance: str = "mse",
    unroll: bool | int | None = None,
    validate: bool = True,
) -> jax.Array:
    """PGD that pushes the features of x_adv away from those of x; no labels.

    Maximises `feature_distance(features_fn(x_adv), features_fn(x))` by steepest-ascent steps
    (sign for L-inf, normalised gradient for L2), each followed by the exact projection onto
    the eps-ball and [0, 1]. The clean features are computed once, without gradient. Returns
    the last iterate, as PGD (Madry et al., 2018) and CAFA do.

    Note: at x_adv = x the distance is at its minimum (zero) and so is its gradient, in exact
    arithmetic; with `random_start=False` the first step follows only the sign of round-off
    differences between the compiled and the reference feature computations.

    Args:
      features_fn: x (N, H, W, C) -> features (N, ...) (any shape with a leading batch dim).
      x: (N, H, W, C) float images in [0, 1].
      eps: budget on the [0, 1] scale (traced; changing it does not recompile).
      step_size: step length (traced).
      steps: number of iterations (static).
      norm: "linf" or "l2".
      random_start: start uniformly in the ball (needs `key`).
      key: `jax.random` key for the random start.
      distance: "mse" or "l2", see `feature_distance`.
      unroll: loop unrolling, see `capjax.attacks._common.attack_loop`.
      validate: check values of x and eps (outside jit only).

    Returns:
      x_adv: same shape and dtype as x, with |x_adv - x|_norm <= eps and 0 <= x_adv <= 1.
    """
    check_attack_inputs(x, eps=eps, norm=norm, steps=steps, validate=validate)
    check_nonnegative(validate, step_size=step_size)
    _check_choice("distance", distance, DISTANCES)
    out = jax.eval_shape(features_fn, x)
    if not hasattr(out, "shape") or len(out.shape) < 1 or out.shape[0] != x.shape[0]:
        raise ValueError(
            "features_fn must map (N, H, W, C) images to one (N, ...) array; for x of shape "
            f"{tuple(x.shape)} it returned {out}."
        )
    reference = jax.lax.stop_gradient(features_fn(x))
    objective = lambda z: feature_distance(features_fn(z), reference, distance)
    step_size = jnp.asarray(step_size, x.dtype)

    def body(_, x_adv):
        _, grad = input_gradient(objective, x_adv)
        return project(x_adv + step_size * normalize_direction(grad, norm), x, eps, norm)

    x_adv = x
    if random_start:
        x_adv = random_init(require_key(key, "a random start"), x, eps, norm)
    return project(attack_loop(steps, body, x_adv, unroll), x, eps, norm)


def cafa(
    class_activation_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    *,
    eps: Any = 8 / 255,
    step_size: Any = 0.01,
    steps: int = 100,
    random_start: bool = True,
    key: jax.Array | None = None,
    unroll: bool | int | None = None,
    validate: bool = True,
) -> jax.Array:
    """CAFA, the class activation feature attack of CAFD (Zhou et al., ICCV 2021, Alg. 1).

    L-inf PGD maximising the mean squared error between the class activation features of
    x_adv and of x, each of its own predicted class (module docstring). Defaults (eps 8/255,
    step 0.01, 100 iterations, random start) are the authors' code's; the paper's Algorithm 1
    has no random start, where the first step has no signal (see `feature_pgd`).

    Example:
      caf = zoo_class_activation_fn(model, variables)  # or class_activation_features_fn(...)
      x_adv = jax.jit(lambda x, k: cafa(caf, x, key=k))(x, jax.random.key(0))

    Args:
      class_activation_fn: x -> class activation features of the predicted class, from
        `class_activation_features_fn` or `zoo_class_activation_fn` (their `kind`, `size` and
        `normalize` options choose the representation; the defaults follow the authors).
      x: (N, H, W, C) float images in [0, 1]. No labels are used.
      eps, step_size, steps, random_start, key, unroll, validate: as in `feature_pgd`.

    Returns:
      x_adv: same shape and dtype as x, with |x_adv - x|_inf <= eps and 0 <= x_adv <= 1.
    """
    return feature_pgd(
        class_activation_fn,
        x,
        eps=eps,
        step_size=step_size,
        steps=steps,
        norm="linf",
        random_start=random_start,
        key=key,
        distance="mse",
        unroll=unroll,
        validate=validate,
    )
