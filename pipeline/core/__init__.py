"""Foundations every room stands on: errors, atomic file writes, the device, and TrainConfig with the project's
settings and paths. Imports nothing else of the package.

Modules are imported by name (`from pipeline.core.<module> import ...`): importing a room loads
nothing heavy."""
