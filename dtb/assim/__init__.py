"""Data assimilation: the ensemble Kalman filter (``enkf``, knows nothing about neurons), the
Vw-dHMDA driver that runs it on the ensemble engine (``hmda``), observation scaling (``observation``)
and fidelity metrics (``metrics``); docs/model.md §5."""
