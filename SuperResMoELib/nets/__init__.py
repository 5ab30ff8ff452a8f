"""Network building blocks and the networks of each method."""
