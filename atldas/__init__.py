"""atldas: hardware-aware differentiable architecture search with explicit topology learning.

The library behind the ``atldas`` command: search an ATL-DAS supernet on matting data under a cost
budget, derive a genotype, retrain it, and score it with the DIM matting metrics.
"""

__version__ = "0.1.0"
