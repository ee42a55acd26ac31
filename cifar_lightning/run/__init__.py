"""The run machinery: the command line, recipes, time budget and estimate, checkpoints and signals, results."""
