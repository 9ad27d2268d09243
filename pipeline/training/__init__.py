"""Training: fitting (fit), one run's life (train), many runs and their engines (engines, cluster),
background processes (launch), nested cross-validation and the release build.

Modules are imported by name (`from pipeline.training.<module> import ...`): importing a room loads
nothing heavy."""
