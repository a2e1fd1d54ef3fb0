"""The DC commands performed (issue 14): :mod:`.live` reads both sites over SSH into the
:class:`~plinth.geo.observe.Observed` the pure decisions of :mod:`plinth.geo` take, and
:mod:`.actions` does each step of a plan on the hosts; :mod:`plinth.geo.execute` runs the
loop between them. It sits above the facts, beside ``plinth status`` (whose connections
and certificates it reuses), and below the CLI (``plinth dc-switchover``)."""
