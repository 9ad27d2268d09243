"""The run folder (folder: the contract and the only module that knows its file names), cross-validation
summaries, the catalog the dashboard lists, and the released model's card.

Modules are imported by name (`from pipeline.runs.<module> import ...`): importing a room loads
nothing heavy."""
