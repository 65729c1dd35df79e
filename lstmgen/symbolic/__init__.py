"""What SymPy does with a spec: parsed forward equations, the derived BPTT, the CSE'd expression lists."""
