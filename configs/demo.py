"""Demo: train the tiny CNN on capjax's built-in synthetic dataset (no download needed).

    python -m capjax.main --config=configs/demo.py --workdir=/tmp/capjax_demo

Runs in about a minute on 2 CPU cores and prints the test accuracy (measured: see README,
"Measured"). `configs/demo.py:smoke` is the seconds-long version the tests run.
"""

from capjax.config_defaults import (
    check_variant,
    classifier_config,
    data_config,
    model_config,
    parse_variant,
    shrink_to_smoke,
)


def get_config(arg=None):
    variant = parse_variant(arg)
    check_variant(variant, {"smoke"}, "configs/demo.py")
    config = classifier_config(
        data=data_config("synthetic"),
        model=model_config("tiny"),
        epochs=3,
        batch_size=128,
        learning_rate=0.05,
        schedule="cosine",
        weight_decay=5e-4,
        log_every_steps=20,
    )
    config.data.augment.crop_padding = 2
    config.data.augment.flip = False
    if "smoke" in variant:
        shrink_to_smoke(config)
    return config
