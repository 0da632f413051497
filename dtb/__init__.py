"""dtb: an open, tested digital twin brain pipeline (spiking network + BOLD data assimilation)."""

__version__ = "0.1.0"
