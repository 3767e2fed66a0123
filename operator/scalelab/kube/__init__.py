"""scalelab on Kubernetes: CRD generation, MPIJob rendering and the kopf operator."""
