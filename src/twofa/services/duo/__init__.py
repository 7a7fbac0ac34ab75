"""Duo Push as the sign-in pages reach it, on top of `twofa.duo`'s client: set-up and
validation, pushes, calls, texts and passcodes, Duo's failmode, and push fatigue.
"""
