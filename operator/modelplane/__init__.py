"""Modelplane: the operator that reconciles ModelDeployments."""
