"""driftsim: learning dynamics of wide networks from NTK to NNGP, and representational drift.

Theory (Avidan, Li & Sompolinsky, arXiv 2309.04522) and Langevin simulation; see SPEC.md and README.md.
"""
__version__ = "0.1.0"
