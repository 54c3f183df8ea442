"""The output: record schemas, manifest, plan, lease, and the committed files read back."""
