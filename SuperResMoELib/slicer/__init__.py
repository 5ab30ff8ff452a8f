"""Slicer adapters (Qt-free): MRML nodes, the module logic, the parameter node, views, background jobs, dependencies."""
