"""capjax's own error for bad configuration and bad input.

`python -m capjax.main` prints a `ConfigError` as one line (what is wrong and what to do) and
exits with status 2; every other exception keeps its traceback, so a bug is never mistaken
for a configuration mistake. It subclasses `ValueError`, so `except ValueError` still
catches it.
"""


class ConfigError(ValueError):
    """A configuration field, command-line flag, workdir or input that capjax cannot use."""
