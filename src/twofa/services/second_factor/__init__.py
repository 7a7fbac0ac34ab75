"""The one second-factor pipeline: the gate every route asks (who may enrol, which method
counts), the server-owned challenges, counting attempts before a secret is checked, the
credential store, each method's options, and a user's own view of their methods.
"""
