"""scalelab's monitoring, generated: alert rules (rules.py), the Grafana dashboard built with
grafana-foundation-sdk (dashboard.py), and the committed files written from them (files.py).

Run as `python manifests/monitoring/generate.py [--check]`. A development tool: not part of the
operator or trainer packages, checked by mypy like them.
"""
