"""Datasets: the bundled Materials Project corpus, the band gap set, and readers for structure sources
(directories of CIF/POSCAR files, JSON lines, tables, the Materials Project API).

Bundled files and their attribution: ``skpolysrl/datasets/data/README.md``.
"""

from ._loaders import load_expt_gap_nonmetals, load_mp_structures, read_structures_jsonl
from ._sources import (STRUCTURE_FILE_PATTERNS, as_structure_source, load_materials_project,
                       read_structure_directory, read_structure_source)
from ._tables import (DATASET_ALIASES, DATASETS, MATBENCH_CLASSIFICATION_TASKS, MATBENCH_TASKS, dataset_task_type,
                      load_dataset, load_matbench, load_mp_property, load_table, read_table,
                      select_temperature_window)

__all__ = ["load_mp_structures", "load_expt_gap_nonmetals", "read_structures_jsonl", "load_dataset", "load_matbench",
           "load_mp_property", "load_table", "read_table", "select_temperature_window", "DATASETS", "MATBENCH_TASKS",
           "DATASET_ALIASES", "MATBENCH_CLASSIFICATION_TASKS", "dataset_task_type"]
__all__ += ["read_structure_directory", "read_structure_source", "as_structure_source", "load_materials_project",
            "STRUCTURE_FILE_PATTERNS"]
