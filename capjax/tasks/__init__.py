"""Task runners, one per `config.task` (`registry.TASKS` maps the name to its module).

A runner trains (through `capjax.train`) and evaluates (through `capjax.eval`); nothing below
this layer imports it.
"""
