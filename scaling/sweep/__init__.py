"""Sweeps: sweep files expanded to runs (spec), submitted as submitit job arrays (launch,
jobs), watched (status) and gathered into one results table (collect)."""
