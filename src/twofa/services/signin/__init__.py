"""The first factor and what follows it: the password sign-in, directory users and their
groups, the enrolment grace period, and remembered devices.
"""
