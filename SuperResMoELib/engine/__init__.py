"""The patch engine: window layout (torch-free), sliding-window inference with Gaussian blending, compute devices."""
