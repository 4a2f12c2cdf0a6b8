"""capjax's bottom layer: what every other package may use, and which uses none of them.

- `mesh`: the data-parallel device mesh and moving host batches onto it;
- `jsonio`: JSON results written atomically, from trees that hold numpy and jax values.

Modules here import only the standard library, numpy and jax (`tests/test_layers.py`).
"""
