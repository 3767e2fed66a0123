"""A run's results: the model of DIR/results.json (model.py), reading and writing it (store.py)
and the one column spec that results.csv, the report's table and the live table share
(columns.py). Used by the local executor, the report and the CLI; below them, above the planner.
"""
