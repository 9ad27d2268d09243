"""Figures from predictions: metrics and their layout, patient-bootstrap intervals, calibration and
per-patient results (evaluate), and plotly figures.

Modules are imported by name (`from pipeline.evaluation.<module> import ...`): importing a room loads
nothing heavy."""
