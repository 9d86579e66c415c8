"""nn-workbench: design, train, watch and serve small neural networks from Jupyter, a web app
or REST.

The core (``spec``, ``model``, ``data``, ``train``) needs only torch, numpy and pydantic.
"""

__version__ = "0.1.0"
