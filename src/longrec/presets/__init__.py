"""Model presets: YAML files holding only overrides of the ExperimentConfig defaults."""
