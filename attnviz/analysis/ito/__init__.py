"""Inference-time optimisation (ITO): sparse codes for an SAE's decoder solved per input, compared
with its encoder (GDM progress update #1, 2024)."""
