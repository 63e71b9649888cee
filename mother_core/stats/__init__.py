"""The streaming statistics pass: per-model and per-pair statistics of every shared tensor."""
