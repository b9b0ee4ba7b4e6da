"""Workload, cut and crash states: the crash run until the power cut, the write log of the
volatile disk-cache model, and the crash states built from it."""
