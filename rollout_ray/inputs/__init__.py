"""Inputs: takes paths, gives rows; files found, cut into shards, staged, read, made prompts."""
