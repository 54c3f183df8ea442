"""What people see of an output: the console, status, inspect (terminal and HTML)."""
