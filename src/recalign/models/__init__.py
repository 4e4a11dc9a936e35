"""Backbones (SASRec, HSTU), output heads and the reward model."""
