"""The per-subject twin report: one self-contained HTML page (jinja2 + matplotlib/nilearn figures)."""
