"""Assembling and publishing a versioned artifact (audiorec.artifact) from a training run."""
