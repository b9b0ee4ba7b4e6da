"""The run directory and everything for people and CI: records, summaries, JUnit, the matrix report."""
