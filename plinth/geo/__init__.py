"""Geo-redundancy: moving the active site between datacenters (issue 14).

The decision layer, pure and unit-tested without hosts, in the style of the rolls'
``decide.py`` (ADR 0013):

* :mod:`.observe`: what a DC command reads per site (reachable hosts, PostgreSQL members
  and their WAL positions, Redis roles and offsets, Sentinels, Airflow units, fences),
  typed, with parsers of the JSON and text the existing facts read;
* :mod:`.decide`: ``plan_switchover``, ``plan_failover``, ``plan_failback``: from one
  observation, a :class:`~.decide.Refusal` or an ordered :class:`~.decide.Plan` of steps;
  and ``model_agrees_with_live``, the check that keeps the environment file honest;
* :mod:`.simulate`: a tiny model of what each step does to an observation, which the
  tests use to prove that no plan ever has two writable primaries (and
  ``plan_failback`` uses to plan the switchover that follows a rejoin);
* :mod:`.examples`: the observations the documentation's step lists are generated from;
* :mod:`.execute`: the loop that runs a plan one step at a time over an ``Executor``
  (reading, performing), and :mod:`.model_file`, the one-line edit of the environment
  file.

The executor over SSH is :mod:`plinth.dc` (above the facts); ``plinth dc-switchover`` is
built on it. ``dc-failover`` and ``dc-failback`` are not built yet (their fence and
rejoin steps have no execution): docs/geo-redundancy.md says what exists.
"""
