"""scikit-learn's estimator checks for estimators whose input is a list of formulas
(PolySRLRegressor, PolySRLClassifier).

The checks are written for numeric 2-D X. Those that apply to a 1-D list of formula
strings are listed here and called explicitly by the estimators' test files; what the
numeric checks test (fit returns self, idempotent fit, pickling, unfitted errors,
sample-order and subset invariance, bad y, empty input, parameters untouched by fit) is
tested there on real formulas.

Checks that cannot apply, and why:
- numeric-X checks (``check_estimators_dtypes``, ``check_dtype_object``, ``check_fit2d_*``,
  ``check_fit1d``, ``check_f_contiguous_array_estimator``, ``check_readonly_memmap_input``,
  ``check_inplace_ensure_writeable``, ``check_estimators_nan_inf``, ``check_complex_data``,
  ``check_positive_only_tag_during_fit``, ``check_regressors_int``, ``check_regressors_train``,
  ``check_classifiers_train``, ``check_classifiers_classes``, ``check_*_data_not_an_array``,
  ``check_estimators_pickle``, ``check_fit_idempotent``, ``check_methods_*_invariance``,
  ``check_n_features_in``, ``check_dict_unchanged``, ``check_estimators_empty_data_messages``):
  X is formulas, not numbers;
- sparse input (``check_estimator_sparse_*``): formulas are not sparse matrices;
- ``sample_weight`` checks: the paper's protocols take no sample weights (the classifier's
  ``class_weight`` reweights classes);
- multi-output and multilabel (``check_regressor_multioutput``, ``check_classifier_multioutput``,
  ``check_classifiers_multilabel_*``, ``check_supervised_y_2d``): one target per model;
- ``check_classifier_not_supporting_multiclass``: the classifier supports multiclass;
- transformer, clusterer and outlier checks: not that kind of estimator;
- ``check_requires_y_none``: y is required and a missing y raises before any data check.
"""

#: Checks that apply to every formula estimator.
FORMULA_ESTIMATOR_CHECKS = [
    "check_no_attributes_set_in_init", "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_estimator_cloneable", "check_estimator_repr", "check_estimator_tags_renamed",
    "check_valid_tag_types", "check_mixin_order", "check_do_not_raise_errors_in_init_or_set_params",
    "check_param_validation", "check_estimators_unfitted", "check_supervised_y_no_nan",
    "check_non_transformer_estimators_n_iter",
]

#: Classifier checks that reject y before looking at X, so they apply to formulas too.
CLASSIFIER_CHECKS = ["check_classifiers_regression_target", "check_classifiers_one_label"]
