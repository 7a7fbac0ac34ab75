"""Sending e-mail: the codes of the e-mail method and the test message of the console."""
