"""Typed errors raised by skpolysrl.

Every error about user input names the offending item (and its position in
the batch when there is one) and says how to fix or skip it.
"""

__all__ = [
    "SkPolySRLError",
    "FormulaError",
    "UnknownElementError",
    "StructureGraphError",
    "ModelFileError",
    "CheckpointError",
    "GraphCacheError",
    "StructureFileError",
    "StructureFileWarning",
]

_SKIP_HINT = (
    "To skip bad rows instead, pass ignore_errors=True (rows become NaN), "
    "or drop them before featurizing."
)
_STRUCTURE_HINT = "Remove that structure from the training data."
# where every row is used (fit, and estimators without ignore_errors) there is nothing to skip with
FIT_HINT = "Correct or drop that row and call again."


def _is_structure(item):
    return hasattr(item, "lattice") and hasattr(item, "composition")


def _describe(item):
    """The item as named in a message: a structure by its formula (its repr is a page long)."""
    if _is_structure(item):
        return f"structure {item.composition.formula!r}"
    return repr(item)


class SkPolySRLError(Exception):
    """Base class of every error skpolysrl raises on purpose."""


class FormulaError(SkPolySRLError, ValueError):
    """A formula (or composition) cannot be turned into a stoichiometry graph.

    Attributes
    ----------
    item : object
        The offending input, as given.
    position : int or None
        Its index in the batch, when it came in a batch.
    where : str or None
        Where it is, as the user sees it (e.g. "data row 3 of in.csv"); named
        instead of ``position`` when given.
    hint : str or None
        The fix the message ends with; default: skip it with ``ignore_errors``
        (a formula) or remove it from the training data (a structure).
    """

    def __init__(self, item, reason, position=None, where=None, hint=None):
        self.item = item
        self.position = position
        self.reason = reason
        self.where = where
        self.hint = hint
        at = f" at {where}" if where is not None else "" if position is None else f" at position {position}"
        if hint is None:
            hint = _STRUCTURE_HINT if _is_structure(item) else _SKIP_HINT
        super().__init__(f"Invalid formula {_describe(item)}{at}: {reason}. {hint}")

    def __reduce__(self):
        return (type(self), (self.item, self.reason, self.position, self.where, self.hint))


class UnknownElementError(FormulaError):
    """A formula names an element that has no Matscholar embedding."""


class StructureGraphError(SkPolySRLError, ValueError):
    """A crystal structure cannot be turned into a structure graph."""


class ModelFileError(SkPolySRLError, OSError):
    """A saved model file is missing, corrupt, or from an incompatible version."""


class CheckpointError(SkPolySRLError, ValueError):
    """A training checkpoint cannot be used for this run: it belongs to other data or
    settings (the message names which), it is further along than ``epochs``, or its
    directory does not exist."""
class GraphCacheError(SkPolySRLError, OSError):
    """A cache path (structure graphs, structure embeddings) holds a file skpolysrl did
    not write (it is never overwritten)."""


class StructureFileError(SkPolySRLError, ValueError):
    """A crystal-structure source (a CIF/POSCAR file, a directory of them, a
    JSON-lines file, a table row) cannot be read, or holds no structures.

    Attributes
    ----------
    source : str
        The offending file (or directory, or table row), as a string.
    reason : str
        What went wrong.
    """

    def __init__(self, source, reason, skippable=True):
        self.source = str(source)
        self.reason = reason
        self.skippable = skippable
        hint = (
            " To skip unreadable files or rows instead, pass ignore_errors=True (a warning names each one "
            "skipped), or fix or remove it."
            if skippable
            else ""
        )
        super().__init__(f"Cannot read structures from {self.source}: {reason}.{hint}")

    def __reduce__(self):
        return (type(self), (self.source, self.reason, self.skippable))


class StructureFileWarning(UserWarning):
    """Structure files or rows were skipped (``ignore_errors=True``), or pymatgen
    warned while parsing them (summarised in one warning per read)."""
