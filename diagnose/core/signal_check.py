"""The data-signal check's records and test sizes, defined once and torch- and pandas-free: the rule
(`diagnose.core.rules.data`), the measurement (`diagnose.engine.datasignal`) and the CLI's options
(`diagnose datasignal`, declared when `diagnose --help` runs) share them."""

PROBE = "data_signal"  # records: probe name; target "pairs"
TARGET = "pairs"
ALPHA = 0.01  # significance level of the permutation test
PERMUTATIONS = 999  # p-values resolve down to 1/1000
MIN_TEST = 8  # fewer held-out pairs cannot tell a map from a guess
METRICS = ("r@1", "chance@1", "p_value", "significant", "detectable_r@1", "n_test", "hits")
