"""Why a model answered: CAM methods and feature maps (cams), ROAD faithfulness (road), ranking the
methods on a run (explain_eval) and the self-contained HTML report.

Modules are imported by name (`from pipeline.explain.<module> import ...`): importing a room loads
nothing heavy."""
