"""pyinfra inventory of stack example-prod-dc2: derived from example-prod.yaml (do not edit; edit the YAML).

Usage: pyinfra inventory/example-prod-dc2.py deploy.py
"""

from plinth.stacks import pyinfra_groups

globals().update(pyinfra_groups(__file__))
