"""Model registry (ids -> family + offline architecture), capability matrix, and model-shape checks."""
