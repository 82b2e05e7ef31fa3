"""LION (linear group RNN for 3D detection, NeurIPS 2024) building blocks: see docs/ARCHITECTURE.md."""
