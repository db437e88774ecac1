"""Expected failures of the nn and cnn families' node tests (merged by expected_failures.py)."""

_RANDOM_DROPOUT = ("Dropout in training mode with a ratio above 0 draws a random mask; tritc keeps its semantics "
                   "deterministic and raises UnsupportedError (the expected data came from numpy's unseeded RNG)")

XFAIL = {
    "test_training_dropout": _RANDOM_DROPOUT,
    "test_training_dropout_default": _RANDOM_DROPOUT,
    "test_training_dropout_default_mask": _RANDOM_DROPOUT,
    "test_training_dropout_mask": _RANDOM_DROPOUT,
}
