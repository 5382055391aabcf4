"""The base of every estimator that takes formulas as X (no torch import: the composition models use it too)."""

from sklearn.base import BaseEstimator


class FormulaEstimator(BaseEstimator):
    """scikit-learn tags for formula-string input and a ``verbose`` log line; subclasses define ``verbose``."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        return tags

    def _log(self, message):
        if self.verbose:
            print(f"[{type(self).__name__}] {message}", flush=True)
