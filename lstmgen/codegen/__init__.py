"""Expression lists → kernel IR → printed kernels → the text of a standalone module."""
