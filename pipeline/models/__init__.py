"""Networks and heads: the Keras backbones and head, EfficientNet-Lite and its converted ImageNet weights
(torch_pickle), and the released model's linear heads and input checks (release).

Modules are imported by name (`from pipeline.models.<module> import ...`): importing a room loads
nothing heavy."""
