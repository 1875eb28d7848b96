"""Capacity planning: ``compare`` options with paired Monte Carlo draws, ``plan`` over a sweep.

One concern per module:

* :mod:`.sweep`: the sweep file (schema, ``load_sweep`` / ``sweep_from_doc``, ``expand_sweep``);
* :mod:`.options`: compare's inputs (a scenario, report directory or trace) as an ``Option``;
* :mod:`.world`: the keyed sampler (:class:`~storagecarbon.carbon.sampling.KeyedSampler`) bound to a
  device_db: for every draw index one value of every uncertain input, keyed by name, so two options
  that both use an H100 see the same H100 draws and comparisons are paired draw by draw;
* :mod:`.compare`: options side by side, each attributed with
  :func:`~storagecarbon.carbon.attribute.attribute_uses` (exactly ``profile``'s numbers for the same
  scenario, seed and draws);
* :mod:`.footprint`: carbon of many configurations at once, the kernel functions
  (:mod:`storagecarbon.carbon.kernel`) over arrays of configurations, lifetimes and grids;
* :mod:`.pareto`: the Pareto front and the median / robust picks;
* :mod:`.plan`: ``plan()`` (the analytic steady state of :mod:`storagecarbon.model.steady_state` over
  every configuration, documented in docs/planning.md) and what to buy;
* :mod:`.cli`: the ``compare`` and ``plan`` commands.

The forecast-error models of hourly intensity series are data
(``storagecarbon/carbon/forecast_errors.yaml``, read by :mod:`storagecarbon.carbon.grid`).
Everything is a pure function of its arguments except the ``load_*`` helpers at the edge.
"""
