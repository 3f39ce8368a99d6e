"""kwsnet's version, in a module of its own: a module that needs it (``export.runtime``,
``tracking``) imports it without importing the ``kwsnet`` package's ``__init__``."""

__version__ = "0.1.0"
