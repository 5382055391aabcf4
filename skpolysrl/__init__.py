"""skpolysrl: PolySRL stoichiometry representations for scikit-learn and matminer."""

__version__ = "0.1.0"

from .exceptions import FormulaError, ModelFileError, SkPolySRLError, StructureGraphError, UnknownElementError
from .exceptions import GraphCacheError, StructureFileError
from .featurizer import PolySRLFeaturizer
from .classifier import PolySRLClassifier
from .regressor import PolySRLRegressor
from .zero_inflated import ZeroInflatedRegressor
from .composition import CompositionClassifier, CompositionRegressor

__all__ = [
    "PolySRLFeaturizer",
    "PolySRLRegressor",
    "PolySRLClassifier",
    "ZeroInflatedRegressor",
    "CompositionRegressor",
    "CompositionClassifier",
    "SkPolySRLError",
    "FormulaError",
    "UnknownElementError",
    "StructureGraphError",
    "ModelFileError",
    "GraphCacheError",
    "StructureFileError",
    "__version__",
]
