"""End-to-end twins of subjects: inputs -> network -> assimilation -> re-simulation -> metrics."""
