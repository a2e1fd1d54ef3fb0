"""pyinfra inventory of stack example-prod-dc1.

Derived from example-prod.yaml: edit the YAML, not this file.

Usage: pyinfra inventory/example-prod-dc1.py deploy.py
"""

from plinth.stacks import pyinfra_groups

globals().update(pyinfra_groups(__file__))
