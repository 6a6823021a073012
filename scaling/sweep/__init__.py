"""Sweeps: sweep files expanded to runs (spec, sizes; resources: keys by size, time limits), submitted through the jobs layer
(launch: one job array per set of resources on Slurm, local processes, or in-process), watched (status), stopped
(cancel) and gathered into one results table (collect)."""
