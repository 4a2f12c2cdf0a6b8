"""capjax: adversarial purification defenses (CAP-GAN, CAFD) and the attacks to evaluate them."""

__version__ = "0.1.0"
