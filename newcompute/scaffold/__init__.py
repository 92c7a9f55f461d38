"""``newcompute new-plugin``: a ready-to-install plugin distribution from templates.

The generated package holds a deliberately trivial paradigm for each chosen
role, its config model, tests that run :mod:`newcompute.testing`'s
conformance suite, and a README; it installs and passes its own tests at
once, so an author starts from green and changes one thing at a time.
"""

from newcompute.scaffold.generate import PluginNames, generate_plugin, parse_roles, plan_files

__all__ = ["PluginNames", "generate_plugin", "parse_roles", "plan_files"]
