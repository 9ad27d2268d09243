"""Cells in, arrays out: reading layouts, patients and labels (layouts), splits, decoding and preprocessing,
the image cache, tf.data pipelines, the synthetic generator and the shortcut descriptors and stresses.

Modules are imported by name (`from pipeline.data.<module> import ...`): importing a room loads
nothing heavy."""
