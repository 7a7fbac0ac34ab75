"""What admins do in the console, the CLI and the API: accounts, user status, API tokens,
the audit log, and the Overview.
"""
