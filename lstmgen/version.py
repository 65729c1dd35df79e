"""lstmgen's version: one place that every module (the loader's cache path, the generated modules' header, the
CLI) and the build (pyproject's dynamic version) read, without importing the package."""

__version__ = "0.1.0"
