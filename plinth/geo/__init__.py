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
* :mod:`.examples`: the observations the documentation's step lists are generated from.

The commands (``plinth dc-switchover``/``dc-failover``/``dc-failback``) and their lab
drills are not built yet: docs/geo-redundancy.md says what they must provide.
"""
