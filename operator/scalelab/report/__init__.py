"""The report of a run: PNG plots (plots.py) and a self-contained report.html (render.py)."""
