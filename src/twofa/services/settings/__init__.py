"""The settings an admin edits in the console (Duo keys, Two Factor Settings), stored in the
database and kept in a per-process copy that follows every node's saves within a second.
"""
