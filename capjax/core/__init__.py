"""capjax's bottom layer: what every other package may use, and which uses none of them.

- `mesh`: the data-parallel device mesh and moving host batches onto it;
- `jsonio`: JSON results written atomically, from trees that hold numpy and jax values;
- `dtypes`: a config's dtype names (and "auto") -> jnp dtypes;
- `errors`: `ConfigError`, the one exception the CLI prints as a line.

Modules here import only the standard library, numpy and jax (`tests/test_layers.py`).
"""
