"""The performance model: constants (one loader), workload sampling, per-step physics over arrays
of configurations, the iteration-level simulation and the planner's steady state built on it.

* :mod:`.constants` — :class:`ModelConstants`, their basis, ``load_constants`` and the one
  resolver of a scenario's ``calibration:`` path (``constants_for``);
* :mod:`.workload` — the requests a scenario draws (both models draw the same ones);
* :mod:`.configs` — hardware configurations as arrays (one per scenario, or a sweep's product);
* :mod:`.physics` — every per-step formula (rates, prefill/decode GPU time, offload overlap,
  host floor, offloaded-KV round trip, KV-chunk IO, power-fraction accounting);
* :mod:`.simulate` — iteration-level simulation of one configuration → modeled trace;
* :mod:`.steady_state` — vectorised steady state of many configurations (``plan``).
"""
