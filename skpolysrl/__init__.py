"""skpolysrl: PolySRL stoichiometry representations for scikit-learn and matminer."""

__version__ = "0.1.0"

from .exceptions import FormulaError, ModelFileError, SkPolySRLError, StructureGraphError, UnknownElementError
from .featurizer import PolySRLFeaturizer

__all__ = [
    "PolySRLFeaturizer",
    "SkPolySRLError",
    "FormulaError",
    "UnknownElementError",
    "StructureGraphError",
    "ModelFileError",
    "__version__",
]
