"""What every use case reads and writes besides its own rows: sign-in sessions, attempt
counters and lock-outs, the audit trail, and the change feed that tells other nodes.
"""
