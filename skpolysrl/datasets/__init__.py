"""Datasets: the bundled Materials Project corpus, the band gap set, and readers for structure files.

Bundled files and their attribution: ``skpolysrl/datasets/data/README.md``.
"""

from ._loaders import load_expt_gap_nonmetals, load_mp_structures, read_structures_jsonl
from ._tables import (DATASETS, MATBENCH_TASKS, load_dataset, load_matbench, load_mp_property, load_table,
                      read_table, select_temperature_window)

__all__ = ["load_mp_structures", "load_expt_gap_nonmetals", "read_structures_jsonl", "load_dataset", "load_matbench",
           "load_mp_property", "load_table", "read_table", "select_temperature_window", "DATASETS", "MATBENCH_TASKS"]
