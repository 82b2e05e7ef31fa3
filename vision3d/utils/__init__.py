"""Small helpers every layer may use (docs/ARCHITECTURE.md, Layers: errors, utilities)."""
