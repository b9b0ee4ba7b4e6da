"""Orchestration, the only package that composes the stages: the kit, one iteration, a
campaign, and the drivers on top of campaigns (bench, compare, reproduce)."""
