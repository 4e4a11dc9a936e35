"""data/loaders."""
