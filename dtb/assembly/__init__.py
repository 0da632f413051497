"""Model assembly below the twin and the phantom: a subject's regions -> the spiking model and its BOLD.

One forward model for every stage that simulates a region-level brain (docs/architecture.md,
"Model assembly"): the twin's assimilation and re-simulation (:mod:`dtb.twin`) and the phantom's
truth run (:mod:`dtb.phantom`) build the network, the gains and the Balloon-Windkessel
observation here, so they cannot drift apart.

- :mod:`dtb.assembly.settings`: :class:`~dtb.assembly.settings.ModelSettings`, the ``model``
  section of a twin config (in-degree, weights, step, delay, wiring); imports nothing heavy;
- :mod:`dtb.assembly.wiring`: the connectome's wiring variants (``dti``, ``random``, ``knn``);
- :mod:`dtb.assembly.region`: neurons per region + connectome -> layout, network and model
  parameters (:class:`~dtb.assembly.region.RegionModel`);
- :mod:`dtb.assembly.forward`: the ensemble observed per region through BOLD
  (:func:`~dtb.assembly.forward.make_simulation`) and one brain driven by an h track
  (:func:`~dtb.assembly.forward.drive_h_track`).

The package imports nothing on its own (``dtb phantom --help`` reads the settings without numpy).
"""
