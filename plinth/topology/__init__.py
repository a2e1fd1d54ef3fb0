"""What each component is made of, derived from the model alone: names, members, ports,
upstreams, the certificates and password files it uses.

One module per component. Nothing here reads a host or imports ``facts``, ``operations``,
``plinth.status`` or ``plinth.cli``: the deploy, the facts' callers, ``plinth status``
and ``plinth outputs`` all derive a component's shape from the same functions
(``tests/test_layers.py`` checks the imports).
"""
