"""edgeprune: make a trained PyTorch network fit an embedded device, measured on that device.

Importing the package is deliberately light: heavy toolchains (TVM, ONNX Runtime) are imported
only inside the backend that uses them, so ``import edgeprune`` works on a machine that has none.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
