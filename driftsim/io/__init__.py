"""Run files (store), their labelled views (axes, labelled), recordings in and out (recordings, nwb, export).

``driftsim.io.load_recording`` is driftsim.io.recordings.load_recording, imported on first use (it
pulls in xarray and the drift metrics, which the run file does not need).
"""


def __getattr__(name: str):
    if name == "load_recording":
        from .recordings import load_recording
        return load_recording
    raise AttributeError(f"module 'driftsim.io' has no attribute {name!r}")
