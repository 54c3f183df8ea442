"""Agents: a rollout's prompt and tools in, a multi-turn episode out (tool calls run by
a NeMo Gym resources server, Python functions, or recorded only)."""
