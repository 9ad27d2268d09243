"""A model on images: batches with test-time augmentation (batches), a run's predictor and evaluation
on other data (predict), a patient's cells together (cells) and exports (export).

Modules are imported by name (`from pipeline.inference.<module> import ...`): importing a room loads
nothing heavy."""
