"""scalelab control plane: API, planner, operator, local executor, report."""
