"""Stands in for the official `kubernetes` client in the operator that
bench/operator_1000_points.py starts (this directory first on its PYTHONPATH): the import fails,
as in the operator image, which does not install the client. The development venv installs it
(the trainer and the tests use it), and kopf imports it whenever it can (kopf's thirdparty and
login helpers), which would add its ~29 MiB of imports to the operator's measured RSS."""

raise ImportError("kubernetes is not installed in the operator image (bench/image_site)")
