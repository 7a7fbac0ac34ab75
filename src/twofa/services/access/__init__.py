"""Who may reach which protected application: the forward-auth check on every request and
the access rules it decides with.
"""
