"""The run: takes a config, gives an output; pieces generated, verified and committed."""
