"""Hydra config tree of the driftsim command (a package so that Hydra finds it in an installed driftsim)."""
