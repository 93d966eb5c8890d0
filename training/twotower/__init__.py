"""The two-tower model (TensorFlow / Keras 3): examples from Feast, towers, training, export.

Keras 3 picks its backend when first imported; both torch and TensorFlow are installed,
so this package asks for TensorFlow before any of its modules imports keras.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
