"""Virtual experiments on fitted twins (`dtb experiment`): lesion, stimulation, rewiring, and
analyses of the fitted h tracks (spectra, Granger causality). docs/experiments.md."""
