"""Sweeps: sweep files expanded to runs (spec, sizes), submitted through the jobs layer
(launch: one job array on Slurm, local processes, or in-process), watched (status), stopped
(cancel) and gathered into one results table (collect)."""
