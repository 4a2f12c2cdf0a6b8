"""Purification defenses: one module per defense (its losses, train step and `purify`)."""
