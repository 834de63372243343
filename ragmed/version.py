"""ragmed's version, in a module of its own so that any module can read it without importing the package root (whose
lazy re-exports would otherwise close an import cycle)."""
__version__ = "0.1.0"
