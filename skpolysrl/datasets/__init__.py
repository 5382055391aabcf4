"""Datasets: the bundled Materials Project corpus, the band gap set, and readers for structure files.

Bundled files and their attribution: ``skpolysrl/datasets/data/README.md``.
"""

from ._loaders import load_expt_gap_nonmetals, load_mp_structures, read_structures_jsonl

__all__ = ["load_mp_structures", "load_expt_gap_nonmetals", "read_structures_jsonl"]
