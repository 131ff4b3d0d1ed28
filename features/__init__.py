"""Sliding-window clip sampling, the extraction stage and the HDF5 feature store."""
