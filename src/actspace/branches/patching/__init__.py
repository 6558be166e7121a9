"""Branch 2C, activation patching and behaviour editing: one module per experiment
(patching_layers, behavior_edit, patching_vs_prompting) and the branch's resolver (resolve)."""
