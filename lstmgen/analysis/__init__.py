"""The derivation as data and as a document, and the error-flow analysis of the carried state."""
