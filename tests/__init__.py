"""Tests of udpupper, one module per module of the package."""
