"""capjax: adversarial purification (CAP-GAN, CAFD) and attacks in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="capjax",
    version="0.1.0",
    description="Adversarial purification defenses (CAP-GAN, CAFD) and attacks in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["capjax", "capjax.*"]),
    install_requires=[
        "jax>=0.4.30",
        "flax>=0.8.5",
        "optax>=0.2.2",
        "orbax-checkpoint>=0.5.20",
        "tensorflow-datasets>=4.9.6",
        "chex>=0.1.86",
        "ml-collections>=0.1.1",
        "absl-py>=2.0",
        "numpy>=1.26",
        "pillow>=10.0",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.5"],
        # Peers of `python -m capjax.bench compare`; never imported by the library or tests.
        # For CPU-only PyTorch install torch first from its CPU index:
        #   pip install torch --index-url https://download.pytorch.org/whl/cpu
        "bench": ["torch>=2.0", "torchattacks>=3.5", "foolbox>=3.3"],
    },
)
